#!/usr/bin/env python3
"""Load and slow readers for the status path (StatusBoundsTests).

  post    POSTs --count Flux events to relay-agent's /flux/events (as notification-controller's
          generic provider sends them) over --connections keep-alive connections, each with a
          message of --message-bytes and --metadata-keys metadata values of --metadata-bytes.
          Prints {"statuses": {"202": n, ...}, "seconds": s}.
  stall   opens --readers connections to the relay's /api/v1/stream with a tiny receive buffer
          and reads nothing (after the response head) until --release appears; --ready is created
          once they are all connected. Then each reader reads what the relay still sends until the
          stream ends (or --quiet seconds pass without a byte), and the first --resume of them
          reconnect with Last-Event-ID until they have seen --expect entries. Prints, per reader,
          {"ended": bool, "first": [ids], "resumed": [ids] | null, "error": str|null}.

Only the standard library; every wait is bounded.
"""

import argparse
import http.client
import json
import os
import socket
import sys
import threading
import time


def post(args):
    counts, lock, next_n = {}, threading.Lock(), [0]
    body_meta = {"revision": "main@sha1:" + "0" * 40}
    for key in range(args.metadata_keys):
        body_meta["k%02d" % key] = "v" * args.metadata_bytes

    def body(n):
        message = ("event %d " % n).ljust(args.message_bytes, "m")
        return json.dumps({
            "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "app-%d" % (n % 20),
                               "apiVersion": "kustomize.toolkit.fluxcd.io/v1"},
            "severity": "info", "timestamp": "2026-11-21T10:00:00Z", "reason": "ReconciliationSucceeded",
            "message": message, "metadata": body_meta, "reportingController": "kustomize-controller"}).encode()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        while True:
            with lock:
                n = next_n[0]
                if n >= args.count:
                    return
                next_n[0] += 1
            try:
                conn.request("POST", "/flux/events", body=body(n), headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except Exception as error:  # noqa: BLE001 - counted as its class name
                status = type(error).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
            with lock:
                counts[status] = counts.get(status, 0) + 1

    start = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=args.timeout)
    print(json.dumps({"statuses": counts, "seconds": round(time.monotonic() - start, 3)}))


class SmallWindow(http.client.HTTPConnection):
    """A connection whose receive buffer is set before connecting (so the window stays small)."""

    def __init__(self, port, rcvbuf):
        super().__init__("127.0.0.1", port, timeout=10)
        self.rcvbuf = rcvbuf

    def connect(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.settimeout(10)
        sock.connect((self.host, self.port))
        self.sock = sock


def event_ids(data):
    """Feed ids of the complete `event: status` blocks in SSE bytes, and the unparsed rest."""
    ids = []
    blocks = data.split(b"\n\n")
    for block in blocks[:-1]:
        lines = block.split(b"\n")
        if b"event: status" in lines:
            ids += [int(line[4:]) for line in lines if line.startswith(b"id: ")]
    return ids, blocks[-1]


def read_stream(response, until, quiet):
    """Reads SSE until the body ends (True), `until()` holds or `quiet` seconds pass without data."""
    ids, rest = [], b""
    while not until(ids):
        try:
            chunk = response.read1(65536)
        except (socket.timeout, TimeoutError):
            return ids, False
        if not chunk:
            return ids, True
        new, rest = event_ids(rest + chunk)
        ids += new
    return ids, False


def stall(args):
    readers = []
    for _ in range(args.readers):
        conn = SmallWindow(args.port, args.rcvbuf)
        conn.request("GET", "/api/v1/stream", headers={"Authorization": "Bearer " + args.token})
        response = conn.getresponse()
        readers.append((conn, response))
    open(args.ready, "w").close()
    deadline = time.monotonic() + args.timeout
    while not os.path.exists(args.release) and time.monotonic() < deadline:
        time.sleep(0.05)
    results = []
    for index, (conn, response) in enumerate(readers):
        result = {"ended": False, "first": [], "resumed": None, "error": None}
        try:
            conn.sock.settimeout(args.quiet)
            result["first"], result["ended"] = read_stream(response, lambda ids: False, args.quiet)
            conn.close()
            if index >= args.resume:
                results.append(result)
                continue
            result["resumed"] = []
            seen = result["first"]
            while len(seen) + len(result["resumed"]) < args.expect and time.monotonic() < deadline:
                last = (result["resumed"] or seen or [0])[-1]
                again = http.client.HTTPConnection("127.0.0.1", args.port, timeout=args.quiet)
                again.request("GET", "/api/v1/stream", headers={"Authorization": "Bearer " + args.token,
                                                                 "Last-Event-ID": str(last)})
                answer = again.getresponse()
                target = args.expect - len(seen) - len(result["resumed"])
                ids, _ = read_stream(answer, lambda got: len(got) >= target, args.quiet)
                result["resumed"] += ids
                again.close()
        except Exception as error:  # noqa: BLE001 - reported
            result["error"] = repr(error)
        results.append(result)
    print(json.dumps(results))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("post")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--message-bytes", type=int, default=100)
    p.add_argument("--metadata-keys", type=int, default=0)
    p.add_argument("--metadata-bytes", type=int, default=0)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--timeout", type=float, default=120)
    s = commands.add_parser("stall")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--token", required=True)
    s.add_argument("--readers", type=int, default=1)
    s.add_argument("--rcvbuf", type=int, default=4096)
    s.add_argument("--ready", required=True)
    s.add_argument("--release", required=True)
    s.add_argument("--expect", type=int, required=True)
    s.add_argument("--resume", type=int, default=1)
    s.add_argument("--quiet", type=float, default=5)
    s.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    post(args) if args.command == "post" else stall(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
