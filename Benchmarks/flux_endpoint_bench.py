#!/usr/bin/env python3
"""Benchmark relay-agent's Flux endpoint against a static file server holding the same artifact.

In a cluster without Relay, Flux downloads artifacts from source-controller, which serves
them with Go's net/http FileServer (sendfile(2), keep-alive). That server cannot run here:
there is no Go toolchain on this machine and none can be fetched. The stand-in reference is
lighttpd (Debian's package, already used by the project's tests): a C, event-driven static
file server that also sends files with sendfile(2) and keeps connections alive, i.e. about
what a plain file server does on Linux at best. Both serve the very same file: lighttpd's
document root holds a hard link to the artifact in relay-agent's store, so both read the
same page-cache pages. Plain HTTP on loopback; everything runs side by side in one run:

  (a) one stream   GET of the big artifact (agent: /v2/big/blobs/sha256:<hex>, lighttpd: the
                   hard link), read in-process with http.client into one reused 1 MiB buffer
                   and discarded; --runs interleaved runs each (order alternating), medians in
                   MiB/s, ratio agent/lighttpd. Before them one GET from each server is hashed
                   and must equal the artifact's digest (what is measured is correct serving).
  (b) concurrent   --streams threads (default 8) GET the same blob at once, one connection
                   each; aggregate MiB/s (all bytes / first request to last byte), --runs
                   interleaved runs, medians.
  (c) small        --requests keep-alive HEADs on one connection: the agent's
                   /v2/big/manifests/main vs a small static file on lighttpd (the manifest's
                   bytes), in 4 interleaved blocks per side; p50/p99 ms and requests/s.
  (d) resources    relay-agent's and lighttpd's CPU seconds over (a)-(c) and peak RSS (VmHWM,
                   reset through /proc/<pid>/clear_refs before each of (a), (b), (c) where the
                   kernel allows it, so a phase's peak includes what the one before left resident).
  (e) skopeo       informational: wall time of `skopeo copy docker://<agent>/big:main dir:…`
                   when skopeo is installed.

Setup reuses tunnel_bench.py (imported): dev certificates (openssl), the big incompressible
repository (--big-mib, generated once with git fast-import and cached under $TMPDIR), git
daemon, relay-server packaging it, then relay-agent fetching it over TLS and serving it on
`listen`. Before each measurement the script waits (at most --quiet-wait s) for a quiet
machine. Exit status 0, 2 = usage or setup error, 3 = a command failed, 130 = interrupted.

Examples:
  swift build -c release --product relay-server && swift build -c release --product relay-agent
  python3 Benchmarks/flux_endpoint_bench.py
  python3 Benchmarks/flux_endpoint_bench.py --big-mib 1024 --runs 3 --json > flux.json
"""

import argparse
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tunnel_bench as tb  # noqa: E402

MIB = tb.MIB
BLOCKS = 4
SIDES = ("agent", "lighttpd")


def parse_args(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=root, help="checkout whose .build/release has relay-server and relay-agent")
    ap.add_argument("--big-mib", type=int, default=256, help="size of the big repository's files, MiB (default 256)")
    ap.add_argument("--big-files", type=int, default=2, help="files the big repository is split into (default 2)")
    ap.add_argument("--runs", type=int, default=5, help="interleaved runs per server for (a) and (b) (default 5)")
    ap.add_argument("--streams", type=int, default=8, help="concurrent GETs in (b) (default 8)")
    ap.add_argument("--requests", type=int, default=2000, help="HEAD requests per server in (c) (default 2000)")
    ap.add_argument("--ready-timeout", type=float, default=900.0, help="seconds for packaging + delivery (default 900)")
    ap.add_argument("--quiet-wait", type=float, default=60.0, help="max seconds to wait for a quiet machine (0: don't)")
    ap.add_argument("--quiet-threshold", type=float, default=0.2, help="'quiet' = at most this many busy cores")
    ap.add_argument("--regenerate", action="store_true", help="regenerate the cached big repository")
    ap.add_argument("--json", action="store_true", help="JSON summary on stdout (the report goes to stderr)")
    args = ap.parse_args(argv)
    for name in ("big_mib", "big_files", "runs", "streams", "requests"):
        if getattr(args, name) < 1:
            ap.error("--%s must be >= 1" % name.replace("_", "-"))
    args.root = os.path.abspath(args.root)
    return args


def request(port, method, path, timeout=5.0):
    """(status, body) of one request on a fresh connection; (None, b"") if nothing answers."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        r = c.getresponse()
        return r.status, r.read()
    except OSError:
        return None, b""
    finally:
        c.close()


def wait_for(what, ready, procs, timeout):
    """Polls ready() until it is true; fails when a process in `procs` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        for p in procs:
            if p.poll() is not None:
                raise tb.SetupError("%s exited (status %s) while waiting for %s:\n%s"
                                    % (p.bench_name, p.returncode, what, tb.tail(p.bench_log)))
        if time.monotonic() > deadline:
            raise tb.SetupError("no %s within %.0fs" % (what, timeout))
        time.sleep(0.1)


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start_relay_and_agent(args, work):
    """relay-server packaging the big repository, relay-agent serving it; returns (agent, Flux port)."""
    release = os.path.join(args.root, ".build", "release")
    exe = {b: os.path.join(release, b) for b in ("relay-server", "relay-agent")}
    for path in exe.values():
        if not os.access(path, os.X_OK):
            raise tb.SetupError("%s missing; build it first: swift build -c release --product %s"
                                % (path, os.path.basename(path)))
    tls = tb.make_certs(os.path.join(work, "tls"))
    token = secrets.token_urlsafe(32)
    token_file = write_lines(os.path.join(work, "agent.token"), [token])
    repo = tb.big_repo_dir(args.big_mib, args.big_files)
    tb.ensure_big_repo(repo, args.big_mib, args.big_files, args.regenerate)
    served = os.path.join(work, "git")
    os.makedirs(served)
    os.symlink(repo, os.path.join(served, "big.git"))
    ports = {k: tb.free_port() for k in ("daemon", "tunnel", "http", "flux")}
    daemon = tb.PROCS.start("git daemon", ["git", "daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1",
                                           "--port=%d" % ports["daemon"], "--base-path=" + served, "--enable=upload-pack"],
                            os.path.join(work, "git-daemon.log"), env=tb.git_env())
    tb.wait_accepting(ports["daemon"], daemon, 10, "git daemon")
    relay_yaml = write_lines(os.path.join(work, "relay.yaml"), [
        "listen: 127.0.0.1:%d" % ports["tunnel"], "http: 127.0.0.1:%d" % ports["http"],
        "tls: {certFile: %s, keyFile: %s}" % (tls["cert"], tls["key"]), "dataDir: " + os.path.join(work, "relay-data"),
        "sources:", "  - {name: big, url: 'git://127.0.0.1:%d/big.git', ref: {branch: main}, interval: 1h}" % ports["daemon"],
        "agents:", "  - {name: flux-bench, tokenSHA256: %s, sources: [big]}" % tb.sha256_hex(token)])
    relay = tb.PROCS.start("relay-server", [exe["relay-server"], "serve", "--config", relay_yaml], os.path.join(work, "relay.log"))
    tb.log("relay-server packaging the %d MiB repository ..." % args.big_mib)
    wait_for("relay /readyz", lambda: request(ports["http"], "GET", "/readyz")[0] == 200, [relay], args.ready_timeout)
    agent_yaml = write_lines(os.path.join(work, "agent.yaml"), [
        "relay: 127.0.0.1:%d" % ports["tunnel"], "caFile: " + tls["ca"], "tokenFile: " + token_file,
        "dataDir: " + os.path.join(work, "agent-data"), "listen: 127.0.0.1:%d" % ports["flux"]])
    agent = tb.PROCS.start("relay-agent", [exe["relay-agent"], "run", "--config", agent_yaml], os.path.join(work, "agent.log"))
    wait_for("big:main on the agent", lambda: request(ports["flux"], "HEAD", "/v2/big/manifests/main")[0] == 200,
             [relay, agent], args.ready_timeout)
    return agent, ports["flux"]


def start_lighttpd(work, artifact, manifest):
    """lighttpd on loopback whose document root has a hard link to the artifact and the manifest's bytes."""
    www = os.path.join(work, "www")
    os.makedirs(www)
    try:
        os.link(artifact, os.path.join(www, "big.tar.gz"))
    except OSError:
        os.symlink(artifact, os.path.join(www, "big.tar.gz"))
    with open(os.path.join(www, "manifest.json"), "wb") as f:
        f.write(manifest)
    exe = shutil.which("lighttpd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if not exe:
        raise tb.SetupError("lighttpd not found: apt-get install lighttpd (scripts/setup.sh installs it)")
    port = tb.free_port()
    conf = write_lines(os.path.join(work, "lighttpd.conf"), [
        'server.bind = "127.0.0.1"', "server.port = %d" % port, 'server.document-root = "%s"' % www,
        'server.errorlog = "%s"' % os.path.join(work, "lighttpd-error.log"),
        "server.max-keep-alive-requests = 65535", "server.max-keep-alive-idle = 600",
        'mimetype.assign = (".gz" => "application/gzip", ".json" => "application/json")'])
    proc = tb.PROCS.start("lighttpd", [exe, "-D", "-f", conf], os.path.join(work, "lighttpd.log"))
    tb.wait_accepting(port, proc, 10, "lighttpd")
    return proc, port, tb.run([exe, "-v"]).stdout.decode().split()[0]


def fetch(port, path, size, digest=None):
    """One GET read into one reused 1 MiB buffer; returns (start, end) perf_counter times."""
    buf = memoryview(bytearray(MIB))
    h = hashlib.sha256() if digest else None
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        if r.status != 200:
            raise tb.CommandFailed("GET %s on port %d answered %d" % (path, port, r.status))
        got = 0
        while True:
            n = r.readinto(buf)
            if not n:
                break
            got += n
            if h:
                h.update(buf[:n])
        t1 = time.perf_counter()
    finally:
        c.close()
    if got != size:
        raise tb.CommandFailed("GET %s on port %d: %d bytes, expected %d" % (path, port, got, size))
    if h and "sha256:" + h.hexdigest() != digest:
        raise tb.CommandFailed("GET %s on port %d: sha256 %s, expected %s" % (path, port, h.hexdigest(), digest))
    return t0, t1


def fetch_parallel(port, path, size, streams):
    """`streams` concurrent GETs; returns aggregate MiB/s (first request to last byte)."""
    spans, errors = [], []
    gate = threading.Barrier(streams)

    def one():
        try:
            gate.wait(30)
            spans.append(fetch(port, path, size))
        except Exception as e:      # reported by the main thread
            errors.append(e)
    threads = [threading.Thread(target=one, daemon=True) for _ in range(streams)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 600
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors or len(spans) != streams:
        raise tb.CommandFailed("concurrent GETs failed: %s" % (errors[:1] or "timed out"))
    return streams * size / MIB / (max(s[1] for s in spans) - min(s[0] for s in spans))


def head_block(port, path, n):
    """n sequential HEADs on one keep-alive connection (after one untimed); (latencies, reconnects)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat, reconnects = [], 0
    try:
        for i in range(n + 1):
            sock = c.sock
            t0 = time.perf_counter()
            c.request("HEAD", path)
            r = c.getresponse()
            r.read()
            t1 = time.perf_counter()
            if r.status != 200:
                raise tb.CommandFailed("HEAD %s on port %d answered %d" % (path, port, r.status))
            if i:
                lat.append(t1 - t0)
                reconnects += c.sock is not sock
    finally:
        c.close()
    return lat, reconnects


def single(s, size):
    t0, t1 = fetch(s["port"], s["blob"], size)
    return size / MIB / (t1 - t0)


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where /proc does not allow it."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(args, sides, size):
    """(a), (b), (c), servers interleaved (order alternating); each sample after a quiet-machine
    wait, with the server CPU it cost; each phase's peak RSS."""
    res = {k: {s: [] for s in SIDES} for k in "abc"}
    res.update(peak_rss_mib={}, rss_reset=True)
    pids = [sides[s]["pid"] for s in SIDES]

    def phase(kind, count, job, show):
        res["rss_reset"] &= all([reset_peak_rss(p) for p in pids])
        for i in range(count):
            for side in (SIDES if i % 2 == 0 else SIDES[::-1]):
                tb.wait_quiet(args)
                cpu = tb.CpuWindow(pids)
                value = job(sides[side], i)
                c = cpu.end()
                row = {"value": value, "server_cpu_s": c["per_pid_cpu_s"][sides[side]["pid"]], "other_cores": c["other_cores"],
                       "wall_s": c["wall_s"]}
                res[kind][side].append(row)
                tb.log("(%s) %d %-8s %s  server CPU %.2fs  other load %.2f cores"
                       % (kind, i + 1, side, show(value), row["server_cpu_s"], row["other_cores"]))
        res["peak_rss_mib"][kind] = {side: (tb.proc_status_kib(sides[side]["pid"], "VmHWM") or 0) / 1024 for side in SIDES}
    per_block = [args.requests // BLOCKS + (k < args.requests % BLOCKS) for k in range(BLOCKS)]
    phase("a", args.runs, lambda s, i: single(s, size), lambda v: "%7.1f MiB/s" % v)
    phase("b", args.runs, lambda s, i: fetch_parallel(s["port"], s["blob"], size, args.streams),
          lambda v: "%7.1f MiB/s in all" % v)
    phase("c", BLOCKS, lambda s, i: head_block(s["port"], s["head"], per_block[i]),
          lambda v: "%d HEADs p50 %.3f ms" % (len(v[0]), tb.pct(v[0], 0.5) * 1000))
    return res


def skopeo_copy(port, work):
    if not shutil.which("skopeo"):
        return None
    t0 = time.perf_counter()
    tb.run(["skopeo", "copy", "--src-tls-verify=false", "docker://127.0.0.1:%d/big:main" % port,
            "dir:" + os.path.join(work, "skopeo-copy")], timeout=600)
    return time.perf_counter() - t0


def summarize(args, res, size, digest, usage, skopeo_s):
    out = {"artifact": {"digest": digest, "bytes": size}, "runs": args.runs, "streams": args.streams,
           "requests": args.requests, "servers": {}}
    for side in SIDES:
        lat = [x for row in res["c"][side] for x in row["value"][0]]
        rows = [r for k in "abc" for r in res[k][side]]
        out["servers"][side] = {
            "single_mib_s": tb.med([r["value"] for r in res["a"][side]]),
            "single_server_cpu_s": tb.med([r["server_cpu_s"] for r in res["a"][side]]),
            "concurrent_mib_s": tb.med([r["value"] for r in res["b"][side]]),
            "concurrent_server_cpu_s": tb.med([r["server_cpu_s"] for r in res["b"][side]]),
            "other_cores_mean": sum(r["other_cores"] * r["wall_s"] for r in rows) / sum(r["wall_s"] for r in rows),
            "head_p50_ms": tb.pct(lat, 0.5) * 1000, "head_p99_ms": tb.pct(lat, 0.99) * 1000,
            "head_rps": len(lat) / sum(lat), "head_reconnects": sum(row["value"][1] for row in res["c"][side]), **usage[side]}
    a, r = out["servers"]["agent"], out["servers"]["lighttpd"]
    out["ratios_agent_over_lighttpd"] = {k: a[k] / r[k] for k in ("single_mib_s", "concurrent_mib_s", "head_p50_ms",
                                                                  "head_p99_ms", "head_rps", "cpu_s")}
    out["skopeo_copy_s"] = skopeo_s
    return out


def report(summary, say):
    s, q, m = summary["servers"], summary["ratios_agent_over_lighttpd"], summary["machine"]
    say("")
    say("relay-agent Flux endpoint vs lighttpd (%s) — %s, %s CPUs; load average %s at start, %s at end" % (
        summary["lighttpd_version"], m.get("cpu", "?"), m.get("cpus"), "%.2f" % m["loadavg_start"][0], "%.2f" % m["loadavg_end"][0]))
    say("artifact %s, %.1f MiB; GET bytes hashed = digest on both servers" % (summary["artifact"]["digest"][:19] + "…",
                                                                               summary["artifact"]["bytes"] / MIB))
    say("")
    rows = [("(a) 1 stream GET, MiB/s (median of %d)" % summary["runs"], "single_mib_s", "%.1f"),
            ("    server CPU s per GET (median)", "single_server_cpu_s", "%.2f"),
            ("(b) %d streams, aggregate MiB/s (median of %d)" % (summary["streams"], summary["runs"]), "concurrent_mib_s", "%.1f"),
            ("    server CPU s per run (median)", "concurrent_server_cpu_s", "%.2f"),
            ("(c) %d keep-alive HEADs: p50 ms" % summary["requests"], "head_p50_ms", "%.3f"),
            ("    p99 ms", "head_p99_ms", "%.3f"),
            ("    requests/s", "head_rps", "%.0f"),
            ("    reconnections", "head_reconnects", "%d"),
            ("other processes' load during (a)-(c), cores", "other_cores_mean", "%.2f"),
            ("(d) peak RSS over (a)-(c), MiB", "peak_rss_mib", "%.1f"),
            ("    in (a) 1 stream (VmHWM reset before each)", "peak_rss_a_mib", "%.1f"),
            ("    in (b) %d streams" % summary["streams"], "peak_rss_b_mib", "%.1f"),
            ("    in (c) HEADs", "peak_rss_c_mib", "%.1f"),
            ("    peak RSS since start, MiB", "peak_rss_since_start_mib", "%.1f"),
            ("    CPU s over (a)-(c)", "cpu_s", "%.2f")]
    say("%-46s %12s %12s %15s" % ("", "relay-agent", "lighttpd", "agent/lighttpd"))
    for label, key, fmt in rows:
        ratio = ("%.2f" % q[key]) if key in q else ""
        say("%-46s %12s %12s %15s" % (label, fmt % s["agent"][key], fmt % s["lighttpd"][key], ratio))
    if not summary["rss_reset"]:
        say("(d) VmHWM could not be reset here: each peak RSS figure is the peak since start")
    sk = summary["skopeo_copy_s"]
    say("(e) skopeo copy docker://…/big:main dir:  %s" % (
        "not installed" if sk is None else "%.2f s (%.1f MiB/s)" % (sk, summary["artifact"]["bytes"] / MIB / sk)))
    qw = tb.QUIET
    say("waited %.0f s for a quiet machine (<= %.2f busy cores) before %d measurements; gave up %d times" % (
        qw["waited_s"], summary["quiet_threshold"], qw["checks"], qw["gave_up"]))


def run_all(args, work, say):
    machine = tb.machine_info()
    agent, flux = start_relay_and_agent(args, work)
    status, manifest = request(flux, "GET", "/v2/big/manifests/main")
    layer = json.loads(manifest)["layers"][0]
    digest, size = layer["digest"], int(layer["size"])
    artifact = os.path.join(work, "agent-data", "store", "artifacts", "sha256", digest.split(":", 1)[1] + ".tar.gz")
    if status != 200 or os.path.getsize(artifact) != size:
        raise tb.SetupError("the agent's manifest (status %s) does not match its store file %s" % (status, artifact))
    lighttpd, port, version = start_lighttpd(work, artifact, manifest)
    sides = {"agent": {"pid": agent.pid, "port": flux, "blob": "/v2/big/blobs/" + digest, "head": "/v2/big/manifests/main"},
             "lighttpd": {"pid": lighttpd.pid, "port": port, "blob": "/big.tar.gz", "head": "/manifest.json"}}
    for side in SIDES:          # correct bytes, and the page cache warm for both
        fetch(sides[side]["port"], sides[side]["blob"], size, digest)
    hwm0 = {side: (tb.proc_status_kib(sides[side]["pid"], "VmHWM") or 0) / 1024 for side in SIDES}
    cpu0 = {side: tb.proc_cpu_seconds(sides[side]["pid"], with_children=False) for side in SIDES}
    res = measure(args, sides, size)
    usage = {}
    for side in SIDES:
        peaks = {"peak_rss_%s_mib" % k: res["peak_rss_mib"][k][side] for k in "abc"}
        usage[side] = dict(peaks, cpu_s=tb.proc_cpu_seconds(sides[side]["pid"], with_children=False) - cpu0[side],
                           peak_rss_mib=max(peaks.values()), peak_rss_since_start_mib=max(hwm0[side], *peaks.values()))
    tb.wait_quiet(args)
    skopeo_s = skopeo_copy(flux, work)
    summary = summarize(args, res, size, digest, usage, skopeo_s)
    summary.update(machine=dict(machine, loadavg_end=os.getloadavg()), rss_reset=res["rss_reset"],
                   quiet_threshold=args.quiet_threshold, quiet_waits=dict(tb.QUIET),
                   lighttpd_version=version)
    report(summary, say)
    if args.json:
        print(json.dumps(tb.finite(summary), indent=2))
    return 0


def main(argv):
    args = parse_args(argv)
    say = (lambda s="": tb.log(s)) if args.json else print
    work = tempfile.mkdtemp(prefix="relay-flux-bench-")
    try:
        return run_all(args, work, say)
    finally:
        tb.PROCS.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, tb._terminate)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        tb.log("interrupted")
        sys.exit(130)
    except (tb.SetupError, tb.CommandFailed) as e:
        tb.log("error: %s" % e)
        sys.exit(2 if isinstance(e, tb.SetupError) else 3)
