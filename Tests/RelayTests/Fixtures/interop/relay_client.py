#!/usr/bin/env python3
"""A relay.v1 agent written in Python, from the same relay.proto as the Swift code.

It proves the protocol is language-neutral: the stubs are generated at run time from the
.proto with grpc_tools.protoc (nothing generated is checked in), then the client speaks to a
relay over TLS like an agent would.

Usage:
  python3 relay_client.py --target localhost:PORT --ca CA.pem --token-file TOKEN
                          [--fetch SOURCE] [--out FILE] [--timeout 20] [--proto relay.proto]
                          [--server-name localhost] [-v]
                          [--cancel-fetches N] [--ack-before-hello] [--forge-ack SOURCE REVISION DIGEST]
                          [--hold SECONDS] [--status-event-bytes N]

What it does:
  1. generates relay_pb2 / relay_pb2_grpc from --proto into a temporary directory and imports them;
  2. opens a TLS channel (root certificate = --ca, server name checked = --server-name, default
     `localhost`); every call carries `authorization: Bearer <token>`;
  3. opens Connect, sends Hello{protocol_version "1.0", agent_version "python-interop/1",
     held_digests []}, and reads until it has a Welcome and a DesiredState. Heartbeat probes
     from the relay (reply = false) are answered at once with the same sequence and
     sent_unix_nanos and reply = true; the client also sends its own probes every
     heartbeat_interval_ms, as an agent must;
  4. with --fetch SOURCE: picks that source's artifact from the DesiredState, calls
     Fetch(digest, offset 0), checks every chunk (offset continuity, total_size, chunk_sha256,
     max_chunk_bytes), writes the bytes to --out (written to a temporary file beside it and
     renamed only once verified; without --out the bytes are verified and dropped), checks the
     total size and the sha256 digest against the Artifact, then sends Ack{source, revision,
     digest} on Connect;
  5. half-closes Connect, waits briefly for the relay to end it, and exits.

Probes of the relay's protocol rules (for tests):
  --cancel-fetches N   before step 4, starts N Fetch calls for the first offered artifact and
                       cancels each right after sending it (the relay must give every slot back);
  --ack-before-hello   sends an Ack (of --forge-ack, or a made-up one) before Hello;
  --forge-ack S R D    after the DesiredState, sends Ack{S, R, D} (a triple the relay did not offer);
  --status-event-bytes N  sends one StatusBatch whose event is far over the status entry caps
                       (message of N bytes, 100 metadata entries) and waits for its StatusAck;
  --hold SECONDS       keeps Connect open (answering heartbeats) this long, or until the relay
                       ends it (a Drain ends it too), before step 5.
  --silent             sends no heartbeats of its own (a dead peer, as the relay sees it).
  How the relay ended Connect is reported as "connect_end": {"code": "OK" | "DRAINED" | "OPEN"
  (still open when the client closed it) | a grpc.StatusCode name, "details": ...}.

Output: exactly one JSON object on stdout.
  success:  {"welcome": {...}, "generation": N, "artifacts": [{source, revision, digest, size}],
             "fetched": {source, digest, size, verified: true} | null, "cancelled_fetches": N,
             "connect_end": {"code": ..., "details": ...}, "status_acked": up_to | null}
  failure:  {"error": {"code": "...", "details": "..."}}
Exit codes:
  0  success
  2  usage error (argparse) or unreadable token file
  3  gRPC error; code is the grpc.StatusCode name (UNAUTHENTICATED, FAILED_PRECONDITION,
     UNAVAILABLE, DEADLINE_EXCEEDED, ...). The overall --timeout also ends as DEADLINE_EXCEEDED.
  4  protocol or verification failure (codes PROTOCOL_ERROR, DRAINED, NO_SUCH_SOURCE,
     VERIFICATION_FAILED)
  5  local setup failure (SETUP: grpc/grpc_tools missing, .proto not found, protoc failed,
     cannot write --out)
Diagnostics (timings, heartbeats) go to stderr with -v.
"""

import argparse
import hashlib
import importlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

HELLO_PROTOCOL_VERSION = "1.0"
AGENT_VERSION = "python-interop/1"
# Generous, so a relay announcing a large max_message_bytes is not cut short by grpc's 4 MB default.
MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024 * 1024
# How long to wait for the relay to end Connect after the client half-closes it.
CLOSE_GRACE_SECONDS = 2.0

_output_lock = threading.Lock()
_output_done = False
_verbose = False


def log(message):
    if _verbose:
        print("relay_client: " + message, file=sys.stderr, flush=True)


def emit(obj, exit_code):
    """Prints the one JSON object and exits. Safe to call from any thread; only the first wins."""
    global _output_done
    with _output_lock:
        if not _output_done:
            _output_done = True
            sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
            sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: do not wait for grpc's threads (a stuck request iterator must not hang the exit).
    os._exit(exit_code)


def fail(code, details, exit_code):
    emit({"error": {"code": code, "details": details}}, exit_code)


class ClientFailure(Exception):
    def __init__(self, code, details, exit_code):
        super().__init__(details)
        self.code = code
        self.details = details
        self.exit_code = exit_code


def protocol_error(details):
    return ClientFailure("PROTOCOL_ERROR", details, 4)


def verification_failed(details):
    return ClientFailure("VERIFICATION_FAILED", details, 4)


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def remaining(self):
        return self.end - time.monotonic()

    def require(self, what):
        left = self.remaining()
        if left <= 0:
            raise ClientFailure("DEADLINE_EXCEEDED", "overall --timeout ran out " + what, 3)
        return left


# ---- stubs ----

def generate_stubs(proto_path, out_dir, deadline):
    """Runs grpc_tools.protoc on the .proto and imports the generated modules."""
    if not os.path.isfile(proto_path):
        raise ClientFailure("SETUP", "proto file not found: " + proto_path, 5)
    try:
        import grpc_tools
    except ImportError as error:
        raise ClientFailure("SETUP", "grpc_tools is not installed (%s); run scripts/setup-python.sh" % error, 5)
    proto_dir = os.path.dirname(os.path.abspath(proto_path))
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    command = [
        sys.executable, "-m", "grpc_tools.protoc",
        "-I" + proto_dir, "-I" + well_known,
        "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
        os.path.abspath(proto_path),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=deadline.require("before stub generation"))
    except subprocess.TimeoutExpired:
        raise ClientFailure("DEADLINE_EXCEEDED", "overall --timeout ran out during stub generation", 3)
    if result.returncode != 0:
        raise ClientFailure("SETUP", "protoc failed (%d): %s" % (result.returncode, result.stderr.strip()), 5)
    stem = os.path.splitext(os.path.basename(proto_path))[0]
    sys.path.insert(0, out_dir)
    try:
        pb2 = importlib.import_module(stem + "_pb2")
        pb2_grpc = importlib.import_module(stem + "_pb2_grpc")
    except Exception as error:  # version skew between protoc and the protobuf runtime shows here
        raise ClientFailure("SETUP", "cannot import generated stubs: %s: %s" % (type(error).__name__, error), 5)
    return pb2, pb2_grpc


# ---- Connect ----

class ConnectSession:
    """The Connect stream: a sender queue feeding the request iterator, and a reader thread
    that answers heartbeat probes at once and hands everything else to the main thread."""

    def __init__(self, pb2, stub, metadata, deadline):
        self.pb2 = pb2
        self.send_queue = queue.Queue()
        self.events = queue.Queue()
        self.closed = threading.Event()
        self.stream_ended = threading.Event()
        self.heartbeats_answered = 0
        self.heartbeats_sent = 0
        self._sequence = 0
        self._half_closed = False
        self._lock = threading.Lock()
        self.call = stub.Connect(self._requests(), metadata=metadata,
                                 timeout=deadline.require("before Connect"))
        self.reader = threading.Thread(target=self._read, name="connect-reader", daemon=True)
        self.reader.start()

    def _requests(self):
        while True:
            message = self.send_queue.get()
            if message is None:
                return
            yield message

    def send(self, **kind):
        with self._lock:
            if self._half_closed:
                return
            self.send_queue.put(self.pb2.AgentMessage(**kind))

    def half_close(self):
        with self._lock:
            if not self._half_closed:
                self._half_closed = True
                self.send_queue.put(None)

    def _read(self):
        try:
            for message in self.call:
                kind = message.WhichOneof("kind")
                if kind == "heartbeat":
                    beat = message.heartbeat
                    if not beat.reply:
                        self.send(heartbeat=self.pb2.Heartbeat(
                            sequence=beat.sequence, sent_unix_nanos=beat.sent_unix_nanos, reply=True))
                        self.heartbeats_answered += 1
                        log("answered relay heartbeat seq=%d" % beat.sequence)
                    continue
                self.events.put(("message", kind, message))
            self.events.put(("end", None, None))
        except Exception as error:  # grpc.RpcError, or anything else the stream raised
            self.events.put(("error", None, error))
        finally:
            self.stream_ended.set()

    def start_heartbeats(self, interval_ms):
        if interval_ms <= 0:
            return

        def beat():
            while not self.closed.wait(interval_ms / 1000.0):
                self._sequence += 1
                self.send(heartbeat=self.pb2.Heartbeat(
                    sequence=self._sequence, sent_unix_nanos=time.time_ns(), reply=False))
                self.heartbeats_sent += 1

        threading.Thread(target=beat, name="connect-heartbeat", daemon=True).start()

    def close(self, grace):
        self.closed.set()
        self.half_close()
        self.stream_ended.wait(max(0.0, grace))
        if not self.stream_ended.is_set():
            log("relay kept Connect open after half-close; cancelling")
            self.call.cancel()
            return {"code": "OPEN", "details": "still open after the half-close"}
        return None

    def watch(self, seconds):
        """Reads Connect for up to `seconds`; returns how the relay ended it, or None if still open."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                event, kind, payload = self.events.get(timeout=left)
            except queue.Empty:
                return None
            ended = describe_end(event, kind, payload)
            if ended is not None:
                return ended


def describe_end(event, kind, payload):
    """How one Connect event ends the stream, or None for an ordinary message."""
    if event == "end":
        return {"code": "OK", "details": ""}
    if event == "error":
        code = getattr(payload, "code", None)
        if callable(code):
            status = code()
            details = payload.details() if callable(getattr(payload, "details", None)) else str(payload)
            return {"code": status.name if status is not None else "UNKNOWN", "details": details or ""}
        return {"code": "INTERNAL", "details": "%s: %s" % (type(payload).__name__, payload)}
    if kind == "drain":
        drain = payload.drain
        return {"code": "DRAINED", "details": drain.reason, "retry_after_ms": drain.retry_after_ms}
    return None


def major(version):
    return version.split(".", 1)[0]


def welcome_json(welcome):
    limits = welcome.limits
    return {
        "agent_name": welcome.agent_name,
        "protocol_version": welcome.protocol_version,
        "relay_version": welcome.relay_version,
        "heartbeat_interval_ms": welcome.heartbeat_interval_ms,
        "limits": {
            "max_chunk_bytes": limits.max_chunk_bytes,
            "max_artifact_bytes": limits.max_artifact_bytes,
            "max_concurrent_fetches": limits.max_concurrent_fetches,
            "max_message_bytes": limits.max_message_bytes,
        },
    }


def wait_for_state(session, deadline, heartbeats=True):
    """Reads Connect until both a Welcome and a DesiredState have arrived."""
    welcome = None
    state = None
    while welcome is None or state is None:
        try:
            event, kind, payload = session.events.get(
                timeout=deadline.require("waiting for Welcome and DesiredState"))
        except queue.Empty:
            raise ClientFailure("DEADLINE_EXCEEDED",
                                "overall --timeout ran out waiting for Welcome and DesiredState", 3)
        if event == "error":
            raise payload
        if event == "end":
            raise protocol_error("relay ended Connect before sending %s"
                                 % ("Welcome" if welcome is None else "DesiredState"))
        if kind == "welcome":
            if welcome is not None:
                raise protocol_error("second Welcome on one Connect stream")
            welcome = payload.welcome
            log("welcome: agent_name=%r protocol=%s heartbeat=%dms"
                % (welcome.agent_name, welcome.protocol_version, welcome.heartbeat_interval_ms))
            if major(welcome.protocol_version) != major(HELLO_PROTOCOL_VERSION):
                raise protocol_error("relay speaks protocol %r, this client %r"
                                     % (welcome.protocol_version, HELLO_PROTOCOL_VERSION))
            if heartbeats:
                session.start_heartbeats(welcome.heartbeat_interval_ms)
        elif kind == "desired_state":
            incoming = payload.desired_state
            if state is None or incoming.generation >= state.generation:
                state = incoming
            log("desired state: generation %d, %d artifact(s)" % (incoming.generation, len(incoming.artifacts)))
        elif kind == "drain":
            drain = payload.drain
            raise ClientFailure("DRAINED", "relay drained the connection: reason=%r retry_after_ms=%d redirect=%r"
                                % (drain.reason, drain.retry_after_ms, drain.redirect), 4)
        else:
            log("ignoring unknown relay message kind %r" % kind)  # newer relay: fields are only added
    return welcome, state


# ---- Fetch ----

def fetch_artifact(pb2, stub, metadata, artifact, limits, out_path, deadline):
    digest = artifact.digest
    if not digest.startswith("sha256:") or len(digest) != len("sha256:") + 64:
        raise verification_failed("artifact digest is not sha256:<64 hex>: %r" % digest)
    expected_hex = digest[len("sha256:"):]
    if limits.max_artifact_bytes and artifact.size > limits.max_artifact_bytes:
        raise verification_failed("artifact size %d exceeds max_artifact_bytes %d"
                                  % (artifact.size, limits.max_artifact_bytes))

    sink = None
    temp_path = None
    if out_path:
        out_dir = os.path.dirname(os.path.abspath(out_path))
        try:
            fd, temp_path = tempfile.mkstemp(prefix=".relay-fetch-", suffix=".part", dir=out_dir)
            sink = os.fdopen(fd, "wb")
        except OSError as error:
            raise ClientFailure("SETUP", "cannot write %s: %s" % (out_path, error), 5)

    whole = hashlib.sha256()
    received = 0
    chunks = 0
    call = stub.Fetch(pb2.FetchRequest(digest=digest, offset=0), metadata=metadata,
                      timeout=deadline.require("before Fetch"))
    try:
        for chunk in call:
            if chunk.offset != received:
                raise verification_failed("chunk %d starts at offset %d, expected %d"
                                          % (chunks, chunk.offset, received))
            if chunk.total_size != artifact.size:
                raise verification_failed("chunk %d says total_size %d, the artifact says %d"
                                          % (chunks, chunk.total_size, artifact.size))
            data = chunk.data
            if limits.max_chunk_bytes and len(data) > limits.max_chunk_bytes:
                raise verification_failed("chunk %d holds %d bytes, over max_chunk_bytes %d"
                                          % (chunks, len(data), limits.max_chunk_bytes))
            if hashlib.sha256(data).digest() != chunk.chunk_sha256:
                raise verification_failed("chunk %d at offset %d: chunk_sha256 mismatch" % (chunks, chunk.offset))
            if received + len(data) > artifact.size:
                raise verification_failed("chunk %d runs past the artifact's size %d" % (chunks, artifact.size))
            whole.update(data)
            if sink is not None:
                sink.write(data)
            received += len(data)
            chunks += 1
        if received != artifact.size:
            raise verification_failed("Fetch ended after %d bytes, the artifact has %d" % (received, artifact.size))
        if whole.hexdigest() != expected_hex:
            raise verification_failed("sha256 of the bytes is sha256:%s, the artifact says %s"
                                      % (whole.hexdigest(), digest))
        if sink is not None:
            sink.flush()
            os.fsync(sink.fileno())
            sink.close()
            sink = None
            os.replace(temp_path, out_path)
            temp_path = None
    except ClientFailure:
        call.cancel()
        raise
    finally:
        if sink is not None:
            sink.close()
        if temp_path is not None and os.path.exists(temp_path):
            os.unlink(temp_path)
    log("fetched %d bytes in %d chunk(s)" % (received, chunks))
    return {"source": artifact.source, "digest": digest, "size": received, "verified": True}


def cancel_fetches(pb2, stub, metadata, artifact, count, deadline):
    """Starts `count` Fetch calls and cancels each right after it is sent."""
    for _ in range(count):
        call = stub.Fetch(pb2.FetchRequest(digest=artifact.digest, offset=0), metadata=metadata,
                          timeout=deadline.require("before a cancelled Fetch"))
        call.cancel()
    # Give the relay a moment to see the resets before the next call.
    time.sleep(0.3)
    return count


def send_oversized_status(pb2, session, size, deadline):
    """Sends a status batch with one event far over the entry caps; returns the acknowledged sequence."""
    metadata = {"k%03d" % n: "v" * (size // 100) for n in range(100)}
    event = pb2.FluxEvent(kind="Kustomization", namespace="flux-system", name="huge", severity="info",
                          reason="Oversized", message="m" * size, revision="main@sha1:" + "0" * 40,
                          controller="python-interop", metadata=metadata)
    entry = pb2.StatusEntry(sequence=1, observed_unix_ms=int(time.time() * 1000), event=event)
    session.send(status=pb2.StatusBatch(journal_id="python-interop-journal", entries=[entry]))
    while True:
        try:
            event_kind, kind, payload = session.events.get(timeout=deadline.require("waiting for StatusAck"))
        except queue.Empty:
            raise ClientFailure("DEADLINE_EXCEEDED", "no StatusAck for the oversized status batch", 3)
        ended = describe_end(event_kind, kind, payload)
        if ended is not None:
            raise ClientFailure(ended["code"], "Connect ended before the StatusAck: " + ended["details"], 4)
        if kind == "status_ack":
            return payload.status_ack.up_to


# ---- main ----

def parse_args(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    default_proto = os.path.normpath(os.path.join(here, "..", "..", "..", "..", "Sources", "Wire", "Proto", "relay.proto"))
    parser = argparse.ArgumentParser(description="relay.v1 agent in Python (interop check).")
    parser.add_argument("--target", required=True, help="host:port of the relay")
    parser.add_argument("--ca", required=True, help="PEM root certificate(s) to trust")
    parser.add_argument("--token-file", required=True, help="file holding the agent's bearer token")
    parser.add_argument("--fetch", metavar="SOURCE", help="fetch and verify this source's artifact, then Ack it")
    parser.add_argument("--out", metavar="FILE", help="where to write the fetched bytes (verified before rename)")
    parser.add_argument("--timeout", type=float, default=20.0, help="overall bound in seconds (default 20)")
    parser.add_argument("--proto", default=default_proto, help="relay.proto (default: %(default)s)")
    parser.add_argument("--server-name", default="localhost", help="TLS server name to verify (default localhost)")
    parser.add_argument("-v", "--verbose", action="store_true", help="timings and events on stderr")
    parser.add_argument("--cancel-fetches", type=int, default=0, metavar="N",
                        help="start N Fetch calls and cancel each right after sending it")
    parser.add_argument("--ack-before-hello", action="store_true", help="send an Ack before Hello")
    parser.add_argument("--forge-ack", nargs=3, metavar=("SOURCE", "REVISION", "DIGEST"),
                        help="send this Ack after the DesiredState")
    parser.add_argument("--hold", type=float, default=0.0, metavar="SECONDS",
                        help="keep Connect open this long (or until the relay ends it) before closing")
    parser.add_argument("--silent", action="store_true", help="send no heartbeats of our own (a dead peer to the relay)")
    parser.add_argument("--status-event-bytes", type=int, default=0, metavar="N",
                        help="send one status batch whose Flux event has a message of N bytes and 100 "
                             "metadata entries of N/100 bytes, and wait for its StatusAck")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.out and not args.fetch:
        parser.error("--out needs --fetch")
    return args


def run(args, deadline):
    try:
        import grpc
    except ImportError as error:
        raise ClientFailure("SETUP", "grpcio is not installed (%s); run scripts/setup-python.sh" % error, 5)

    try:
        with open(args.token_file, "r", encoding="utf-8") as handle:
            token = handle.read().strip()
        with open(args.ca, "rb") as handle:
            root = handle.read()
    except OSError as error:
        raise ClientFailure("USAGE", str(error), 2)
    if not token:
        raise ClientFailure("USAGE", "token file %s is empty" % args.token_file, 2)

    with tempfile.TemporaryDirectory(prefix="relay-stubs-") as stub_dir:
        started = time.monotonic()
        pb2, pb2_grpc = generate_stubs(args.proto, stub_dir, deadline)
        log("stubs generated and imported in %.0f ms" % ((time.monotonic() - started) * 1000))

        credentials = grpc.ssl_channel_credentials(root_certificates=root)
        options = [
            ("grpc.ssl_target_name_override", args.server_name),
            ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
        ]
        metadata = (("authorization", "Bearer " + token),)
        channel = grpc.secure_channel(args.target, credentials, options=options)
        session = None
        try:
            stub = pb2_grpc.TunnelStub(channel)
            started = time.monotonic()
            session = ConnectSession(pb2, stub, metadata, deadline)
            forged = args.forge_ack or ["made-up", "main@sha1:" + "0" * 40, "sha256:" + "0" * 64]
            if args.ack_before_hello:
                session.send(ack=pb2.Ack(source=forged[0], revision=forged[1], digest=forged[2]))
            session.send(hello=pb2.Hello(protocol_version=HELLO_PROTOCOL_VERSION,
                                         agent_version=AGENT_VERSION, held_digests=[]))
            welcome, state = wait_for_state(session, deadline, heartbeats=not args.silent)
            log("Welcome + DesiredState after %.0f ms" % ((time.monotonic() - started) * 1000))
            if args.forge_ack:
                session.send(ack=pb2.Ack(source=forged[0], revision=forged[1], digest=forged[2]))

            cancelled = 0
            if args.cancel_fetches > 0:
                if not state.artifacts:
                    raise ClientFailure("NO_SUCH_SOURCE", "nothing offered to cancel fetches of", 4)
                cancelled = cancel_fetches(pb2, stub, metadata, state.artifacts[0], args.cancel_fetches, deadline)

            status_acked = None
            if args.status_event_bytes > 0:
                status_acked = send_oversized_status(pb2, session, args.status_event_bytes, deadline)

            fetched = None
            if args.fetch:
                matches = [a for a in state.artifacts if a.source == args.fetch]
                if not matches:
                    raise ClientFailure("NO_SUCH_SOURCE", "no artifact for source %r in DesiredState (sources: %s)"
                                        % (args.fetch, ", ".join(sorted(a.source for a in state.artifacts)) or "none"), 4)
                artifact = matches[-1]
                started = time.monotonic()
                fetched = fetch_artifact(pb2, stub, metadata, artifact, welcome.limits, args.out, deadline)
                log("Fetch took %.0f ms" % ((time.monotonic() - started) * 1000))
                session.send(ack=pb2.Ack(source=artifact.source, revision=artifact.revision, digest=artifact.digest))

            ended = session.watch(min(max(args.hold, 0.2 if args.forge_ack else 0.0), deadline.remaining()))
            if ended is None:
                ended = session.close(min(CLOSE_GRACE_SECONDS, deadline.remaining()))
                while ended is None:
                    try:
                        event, kind, payload = session.events.get_nowait()
                    except queue.Empty:
                        ended = {"code": "OK", "details": ""}
                        break
                    ended = describe_end(event, kind, payload)
            log("heartbeats: %d answered, %d sent" % (session.heartbeats_answered, session.heartbeats_sent))
            return {
                "welcome": welcome_json(welcome),
                "generation": state.generation,
                "artifacts": [{"source": a.source, "revision": a.revision, "digest": a.digest, "size": a.size}
                              for a in state.artifacts],
                "fetched": fetched,
                "cancelled_fetches": cancelled,
                "status_acked": status_acked,
                "connect_end": ended,
            }
        finally:
            if session is not None:
                session.closed.set()
                session.half_close()
            channel.close()


def main(argv=None):
    global _verbose
    args = parse_args(argv)
    _verbose = args.verbose
    if not _verbose:
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before grpc is imported: no TLS handshake chatter
    deadline = Deadline(args.timeout)
    # Last resort: whatever blocks, the process ends shortly after --timeout.
    watchdog = threading.Timer(args.timeout + 1.0, fail,
                               ("DEADLINE_EXCEEDED", "overall --timeout of %gs ran out" % args.timeout, 3))
    watchdog.daemon = True
    watchdog.start()
    try:
        result = run(args, deadline)
    except ClientFailure as failure:
        fail(failure.code, failure.details, failure.exit_code)
    except Exception as error:
        code = getattr(error, "code", None)
        if callable(code):  # grpc.RpcError (a grpc.Call)
            status = code()
            details = error.details() if callable(getattr(error, "details", None)) else str(error)
            fail(status.name if status is not None else "UNKNOWN", details or "", 3)
        fail("INTERNAL", "%s: %s" % (type(error).__name__, error), 4)
    emit(result, 0)


if __name__ == "__main__":
    main()
