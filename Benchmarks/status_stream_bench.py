#!/usr/bin/env python3
"""Benchmark the status path end to end: Flux events into relay-agent, up the tunnel, into the
relay's database, out on the server-sent-event stream — at a fixed rate, with live readers.

  generator   --rate events per second (default 1000) for --seconds (default 30), POSTed
              to the agent's /flux/events as notification-controller's generic provider
              sends them (keep-alive connections from --senders threads, paced per second).
              Each message carries its send time and number.
  readers     --readers SSE clients (default 3) on the relay's /api/v1/stream, started
              before the generator, each checking that it sees every event once, in journal
              order (sequence numbers only ever increase).
  judged      every reader receives every event (none missing, none twice, in order) and
              the stream keeps up: p99 latency from POST to SSE arrival < 1 s, and the
              backlog at the end drains within 5 s.              target: 1000 events/s

Also reported: achieved POST rate, POST latency (journal fsync included), latency p50/p99/max,
peak RSS and CPU seconds of relay-server and relay-agent. Everything on loopback in one
temporary directory; nothing but the two binaries and python3 is needed.

Usage (after `swift build -c release`):
  python3 Benchmarks/status_stream_bench.py [--rate 1000] [--seconds 30] [--readers 3] [--json]
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tunnel_bench as tb  # noqa: E402  (shared helpers: run, free_port, waits, /proc readers, percentiles)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--readers", type=int, default=3)
    p.add_argument("--senders", type=int, default=16)
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def event_body(n, sent_ns):
    return json.dumps({
        "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "app-%d" % (n % 50),
                           "apiVersion": "kustomize.toolkit.fluxcd.io/v1"},
        "severity": "info", "timestamp": "2026-11-21T10:00:00Z", "reason": "ReconciliationSucceeded",
        "message": "bench n=%d t=%d" % (n, sent_ns), "metadata": {"revision": "main@sha1:" + "0" * 40},
        "reportingController": "kustomize-controller"}).encode()


class Reader(threading.Thread):
    def __init__(self, port, token, since, stop):
        super().__init__(daemon=True)
        self.port, self.token, self.since, self.stop = port, token, since, stop
        self.seen, self.latencies, self.duplicates, self.disorder, self.error = set(), [], 0, 0, None
        self.last_sequence = 0

    def run(self):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            conn.request("GET", "/api/v1/stream?since=%d" % self.since, headers={"Authorization": "Bearer " + self.token})
            resp = conn.getresponse()
            if resp.status != 200:
                self.error = "stream answered %d" % resp.status
                return
            while not self.stop.is_set():
                line = resp.fp.readline()
                if not line:
                    self.error = "stream ended"
                    return
                if not line.startswith(b"data: "):
                    continue
                record = json.loads(line[6:])
                message = (record.get("event") or {}).get("message", "")
                if not message.startswith("bench "):
                    continue
                fields = dict(part.split("=") for part in message.split()[1:])
                n, sent = int(fields["n"]), int(fields["t"])
                self.latencies.append((time.time_ns() - sent) / 1e9)
                if n in self.seen:
                    self.duplicates += 1
                # The journal's order is the order events were accepted; it must never go back.
                if record["sequence"] <= self.last_sequence:
                    self.disorder += 1
                self.seen.add(n)
                self.last_sequence = record["sequence"]
        except Exception as e:  # noqa: BLE001 - reported
            if not self.stop.is_set():
                self.error = repr(e)


def generate(port, rate, seconds, senders):
    """Paced POSTs; returns (sent count, post latencies, failures)."""
    counter = {"n": 0, "fail": 0}
    lock = threading.Lock()
    post_latency = []
    start = time.monotonic()
    total = rate * seconds

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                n = counter["n"]
                if n >= total:
                    return
                counter["n"] += 1
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.time_ns()
            try:
                conn.request("POST", "/flux/events", body=event_body(n, t0), headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 202
            except Exception:  # noqa: BLE001 - counted
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            with lock:
                post_latency.append((time.time_ns() - t0) / 1e9)
                if not ok:
                    counter["fail"] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    return total, time.monotonic() - start, post_latency, counter["fail"]


def main(argv):
    args = parse_args(argv)
    bins = os.path.join(args.root, ".build", "release")
    for name in ("relay-server", "relay-agent"):
        if not os.access(os.path.join(bins, name), os.X_OK):
            print("missing %s/%s: run `swift build -c release` first" % (bins, name), file=sys.stderr)
            return 2
    work = tempfile.mkdtemp(prefix="relay-status-bench-")
    procs = []
    try:
        tb.run([os.path.join(bins, "relay-server"), "dev-certs", "--dir", os.path.join(work, "tls")])
        repo = os.path.join(work, "repo")
        os.makedirs(repo)
        with open(os.path.join(repo, "app.yaml"), "w") as f:
            f.write("a: 1\n")
        tb.git("init", "-q", "-b", "main", cwd=repo)
        tb.git("add", "-A", cwd=repo)
        tb.git("commit", "-q", "-m", "initial", cwd=repo)
        agent_token, reader_token = "bench-agent-token", "bench-reader-token"
        with open(os.path.join(work, "agent.token"), "w") as f:
            f.write(agent_token + "\n")
        tunnel_port, http_port, flux_port = tb.free_port(), tb.free_port(), tb.free_port()
        with open(os.path.join(work, "relay.yaml"), "w") as f:
            f.write("listen: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n" % (tunnel_port, http_port))
            f.write("tls: {certFile: tls/server.pem, keyFile: tls/server-key.pem}\ndataDir: relay-data\n")
            f.write("sources:\n  - {name: app, url: repo, ref: {branch: main}, interval: 1h}\n")
            f.write("readers:\n  - {name: bench, tokenSHA256: %s}\n" % tb.sha256_hex(reader_token))
            f.write("agents:\n  - {name: edge, tokenSHA256: %s, sources: [app]}\n" % tb.sha256_hex(agent_token))
        with open(os.path.join(work, "agent.yaml"), "w") as f:
            f.write("relay: 127.0.0.1:%d\ncaFile: tls/ca.pem\ntokenFile: agent.token\ndataDir: agent-data\n" % tunnel_port)
            f.write("listen: 127.0.0.1:%d\n" % flux_port)
        relay = subprocess.Popen([os.path.join(bins, "relay-server"), "serve", "--config", os.path.join(work, "relay.yaml")],
                                 stdout=open(os.path.join(work, "relay.log"), "w"), stderr=subprocess.STDOUT)
        procs.append(relay)
        tb.wait_accepting(http_port, relay, 60, "relay http")
        agent = subprocess.Popen([os.path.join(bins, "relay-agent"), "run", "--config", os.path.join(work, "agent.yaml")],
                                 stdout=open(os.path.join(work, "agent.log"), "w"), stderr=subprocess.STDOUT)
        procs.append(agent)
        tb.wait_accepting(flux_port, agent, 60, "agent flux endpoint")
        time.sleep(1)

        stop = threading.Event()
        readers = [Reader(http_port, reader_token, 0, stop) for _ in range(args.readers)]
        for r in readers:
            r.start()
        time.sleep(0.5)
        cpu0 = {p.pid: tb.proc_cpu_seconds(p.pid) for p in procs}
        total, elapsed, post_latency, failures = generate(flux_port, args.rate, args.seconds, args.senders)
        sent_done = time.monotonic()
        deadline = sent_done + 30
        while time.monotonic() < deadline and any(len(r.seen) < total for r in readers):
            time.sleep(0.05)
        drain = time.monotonic() - sent_done
        stop.set()
        cpu = {p.pid: tb.proc_cpu_seconds(p.pid) - cpu0[p.pid] for p in procs}
        result = {
            "rate_target": args.rate, "seconds": args.seconds, "sent": total, "post_failures": failures,
            "achieved_rate": round(total / elapsed, 1),
            "post_latency_ms": {"p50": round(tb.pct(post_latency, 0.5) * 1000, 2), "p99": round(tb.pct(post_latency, 0.99) * 1000, 2)},
            "drain_after_last_post_s": round(drain, 3),
            "readers": [{"received": len(r.seen), "missing": total - len(r.seen), "duplicates": r.duplicates,
                         "out_of_order": r.disorder, "error": r.error,
                         "latency_ms": {"p50": round(tb.pct(r.latencies, 0.5) * 1000, 1), "p99": round(tb.pct(r.latencies, 0.99) * 1000, 1),
                                        "max": round(max(r.latencies, default=float("nan")) * 1000, 1)}} for r in readers],
            "relay": {"peak_rss_mib": round(tb.proc_status_kib(relay.pid, "VmHWM") / 1024, 1), "cpu_s": round(cpu[relay.pid], 2)},
            "agent": {"peak_rss_mib": round(tb.proc_status_kib(agent.pid, "VmHWM") / 1024, 1), "cpu_s": round(cpu[agent.pid], 2)},
        }
        ok = (failures == 0 and all(r["missing"] == 0 and r["duplicates"] == 0 and r["out_of_order"] == 0 for r in result["readers"])
              and all(r["latency_ms"]["p99"] < 1000 for r in result["readers"]) and drain < 5)
        result["verdict"] = "PASS" if ok else "FAIL"
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print("status stream: %d events at %d/s for %d s (achieved %.0f/s), %d POST failures"
                  % (total, args.rate, args.seconds, result["achieved_rate"], failures))
            print("  POST /flux/events latency (journal fsync included): p50 %.2f ms, p99 %.2f ms"
                  % (result["post_latency_ms"]["p50"], result["post_latency_ms"]["p99"]))
            for i, r in enumerate(result["readers"]):
                print("  reader %d: received %d, missing %d, duplicates %d, out of order %d, latency p50 %.1f ms p99 %.1f ms max %.1f ms%s"
                      % (i, r["received"], r["missing"], r["duplicates"], r["out_of_order"], r["latency_ms"]["p50"],
                         r["latency_ms"]["p99"], r["latency_ms"]["max"], " error: " + r["error"] if r["error"] else ""))
            print("  last event reached every reader %.3f s after the last POST" % drain)
            print("  relay-server peak RSS %.1f MiB, CPU %.2f s; relay-agent peak RSS %.1f MiB, CPU %.2f s"
                  % (result["relay"]["peak_rss_mib"], result["relay"]["cpu_s"], result["agent"]["peak_rss_mib"], result["agent"]["cpu_s"]))
            print("  verdict (all received once in order, p99 < 1 s, drained < 5 s): %s" % result["verdict"])
        return 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
