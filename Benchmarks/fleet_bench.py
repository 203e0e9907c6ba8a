#!/usr/bin/env python3
"""Fleet benchmark: one real relay-server against thousands of simulated agents (relay-bench fleet).

For each fleet size in --agents (default 1000,5000,10000), in a fresh temporary directory:
a relay-server (dev certificates made with openssl, one local git repository as its only
source, relay.yaml listing N agents fleet-00000.. with tokens fleet-token-<i>, default
heartbeat unless --heartbeat) and one `relay-bench fleet` process simulating the N agents,
each on its own HTTP/2 + TLS 1.3 connection with relay-agent's transport settings and
reconnect rules. Phases (pick with --only):

  a  cold start   the whole fleet starts at once; time until all N have a Welcome
                  (cap 180 s; otherwise how many got one).
  b  idle         (and steady: sessions dropped during the window are counted)
                  with the fleet connected: relay RSS per agent = (RSS now - RSS of the same
                  relay before the fleet started) / N; relay CPU (% of one core) over
                  --idle-seconds; beside, the harness's own CPU and RSS (its whole RSS / N,
                  ~45 MiB of it the process itself) and heartbeat round trips of the idle
                  fleet (agent probe -> relay reply).
  c  fan-out      commit to the source, POST the relay's GitLab webhook; time until every
                  agent has the new revision in a DesiredState: p50/p99/max of (arrival -
                  the artifact's created_unix_ms), and how many missed it (cap 60 s).
  d  kill -9      mark, kill -9 the relay, start it again at once (same config and data):
                  time until all N are welcomed again (cap 180 s).
  e  graceful     mark, SIGTERM (the relay drains), wait for its exit (the drain time),
                  start it again: time from SIGTERM until all N are welcomed again (cap 300 s).
  f  bulk         `fetch on` (agents first fetch the current small artifact), then commit a
                  ~1 MiB incompressible file and call the webhook: time until every agent has
                  fetched and verified it (cap 300 s), relay RSS peak (VmRSS sampled every
                  0.5 s, and VmHWM), fetch failures and refusals.

"All back" times come from the harness's own clock: the last agent's latest Welcome since
the mark, once all N are live. With more than one address (--addresses, auto: one per 4000
agents, at most 8) the relay listens on 0.0.0.0 and the agents are spread over 127.0.0.1..
127.0.0.K (all named in the certificate) so that ephemeral ports and TIME_WAIT do not run
out. Both Swift binaries raise their soft open-file limit to the hard one; the hard limit
must be at least N + 1000 (checked and reported).

Output: progress on stderr, then the issue's table (and the harness's own cost) on stdout;
--json prints everything as JSON instead. Relay logs stay in the temporary directory
(--keep keeps it; the tail of the relay log is printed on failure). The harness runs with
glibc malloc tuned to give memory back (GLIBC_TUNABLES, unless already set); the relay runs
with the caller's environment.

Exit status: 0, 2 = usage or setup error, 3 = a phase failed to run, 130 = interrupted.

Examples:
  swift build -c release --product relay-server && swift build -c release --product relay-bench
  python3 Benchmarks/fleet_bench.py --agents 1000
  python3 Benchmarks/fleet_bench.py --agents 1000,5000,10000 --json > fleet.json
  python3 Benchmarks/fleet_bench.py --agents 200 --quick --only a,b,c \\
      --relay-server .build/debug/relay-server --relay-bench .build/debug/relay-bench
"""

import argparse
import hashlib
import http.client
import json
import math
import os
import queue
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PHASES = "abcdef"
NAME_FORMAT = "fleet-%05d"
TOKEN_PREFIX = "fleet-token-"
# The harness only (the relay runs with the caller's environment): glibc keeps freed chunk
# buffers of thousands of connections otherwise, and the harness's RSS after phase f stays
# near its peak (measured at 500 agents: 787 MiB without, 466 MiB with). Not applied when
# GLIBC_TUNABLES is already set.
HARNESS_MALLOC = "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=131072:glibc.malloc.mmap_threshold=131072"
HARNESS_ENV = dict(os.environ) if "GLIBC_TUNABLES" in os.environ else dict(os.environ, GLIBC_TUNABLES=HARNESS_MALLOC)
CAPS = {"a": 180, "c": 60, "d": 180, "e": 300, "f": 300, "f_warmup": 120}
QUICK_CAPS = {"a": 60, "c": 30, "d": 60, "e": 90, "f": 90, "f_warmup": 60}


def log(msg=""):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


class SetupError(Exception):
    pass


class PhaseFailed(Exception):
    pass


# =====================================================================
# Processes: every child is registered and stopped on exit
# =====================================================================

class Procs:
    """Background processes, each in its own session; stopped (TERM, then KILL) by id."""

    def __init__(self):
        self.items = []

    def start(self, argv, log_path, stdin=subprocess.DEVNULL, stdout=None, env=None):
        f = open(log_path, "ab")
        try:
            p = subprocess.Popen(argv, stdin=stdin, stdout=stdout if stdout is not None else f,
                                 stderr=f, start_new_session=True, env=env)
        except FileNotFoundError:
            raise SetupError("cannot run %s" % argv[0])
        finally:
            f.close()
        p.log_path = log_path
        self.items.append(p)
        return p

    def forget(self, p):
        if p in self.items:
            self.items.remove(p)

    def stop(self, p, grace=10.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        self.forget(p)

    def stop_all(self):
        for p in reversed(list(self.items)):
            self.stop(p, grace=5.0)


PROCS = Procs()


def run(argv, cwd=None, env=None, input=None):
    p = subprocess.run(argv, cwd=cwd, env=env, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise SetupError("%s failed (exit %d): %s" % (" ".join(argv[:4]), p.returncode,
                                                      p.stderr.decode(errors="replace").strip()[-2000:]))
    return p.stdout.decode()


def git(*args):
    env = dict(os.environ)
    env = {k: v for k, v in env.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, LC_ALL="C",
               GIT_AUTHOR_NAME="Fleet Bench", GIT_AUTHOR_EMAIL="bench@relay.invalid",
               GIT_COMMITTER_NAME="Fleet Bench", GIT_COMMITTER_EMAIL="bench@relay.invalid")
    return run(["git"] + list(args), env=env).strip()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def proc_cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def http_call(port, method, path, body=None, headers=None, timeout=5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def pct(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


# =====================================================================
# Setup
# =====================================================================

def make_certs(d, addresses):
    os.makedirs(d, exist_ok=True)
    ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca-key.pem")
    cert, key = os.path.join(d, "server.pem"), os.path.join(d, "server-key.pem")
    csr, ext = os.path.join(d, "server.csr"), os.path.join(d, "server.ext")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509"] + ec + ["-keyout", ca_key, "-out", ca, "-days", "7",
         "-subj", "/CN=Relay Fleet Bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run(["openssl", "req"] + ec + ["-keyout", key, "-out", csr, "-subj", "/CN=localhost"])
    sans = ",".join(["DNS:localhost"] + ["IP:%s" % a for a in addresses])
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n" % sans)
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial",
         "0x" + secrets.token_hex(8), "-days", "7", "-sha256", "-extfile", ext, "-out", cert])
    return {"ca": ca, "cert": cert, "key": key}


def make_repo(path):
    git("init", "--quiet", "--initial-branch=main", path)
    os.makedirs(os.path.join(path, "apps"))
    with open(os.path.join(path, "kustomization.yaml"), "w") as f:
        f.write("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - apps/web.yaml\n")
    return commit_revision(path, 0)


def commit_revision(path, n):
    with open(os.path.join(path, "apps", "web.yaml"), "w") as f:
        f.write("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: fleet\ndata:\n"
                "  revision: \"%d\"\n" % n)
    git("-C", path, "add", "-A")
    git("-C", path, "commit", "--quiet", "-m", "fleet bench revision %d" % n)
    return git("-C", path, "rev-parse", "HEAD")


def commit_bulk(path, mib):
    with open(os.path.join(path, "apps", "bulk.bin"), "wb") as f:
        f.write(os.urandom(int(mib * (1 << 20))))
    git("-C", path, "add", "-A")
    git("-C", path, "commit", "--quiet", "-m", "fleet bench bulk %.1f MiB" % mib)
    return git("-C", path, "rev-parse", "HEAD")


class Relay:
    """One relay-server configuration; started, killed and restarted on the same data."""

    def __init__(self, binary, work, n, addresses, tls, repo, heartbeat, extra_limits=None):
        self.binary = binary
        self.work = work
        self.tunnel_port, self.http_port = free_port(), free_port()
        self.hook_token = secrets.token_urlsafe(16)
        self.repo = repo
        self.log_path = os.path.join(work, "relay.log")
        self.config = os.path.join(work, "relay.yaml")
        self.proc = None
        self.starts = 0
        listen = "127.0.0.1" if len(addresses) == 1 else "0.0.0.0"
        lines = ["listen: %s:%d" % (listen, self.tunnel_port), "http: 127.0.0.1:%d" % self.http_port,
                 "tls: {certFile: %s, keyFile: %s}" % (tls["cert"], tls["key"]),
                 "dataDir: %s" % os.path.join(work, "relay-data"), "webhookToken: %s" % self.hook_token]
        limits = (["heartbeatInterval: %s" % heartbeat] if heartbeat else []) + list(extra_limits or [])
        if limits:
            lines.append("limits: {%s}" % ", ".join(limits))
        lines += ["sources:", "  - {name: fleet, url: %s, ref: {branch: main}, interval: 1h}" % repo, "agents:"]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
            for i in range(n):
                token = "%s%d" % (TOKEN_PREFIX, i)
                f.write("  - {name: %s, tokenSHA256: %s, sources: [fleet]}\n"
                        % (NAME_FORMAT % i, hashlib.sha256(token.encode()).hexdigest()))

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, ready_timeout=120):
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(b"---- fleet_bench: start %d ----\n" % self.starts)
        self.proc = PROCS.start([self.binary, "serve", "--config", self.config], self.log_path)
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise SetupError("relay-server exited (status %s):\n%s" % (self.proc.returncode, tail(self.log_path)))
            try:
                status, _ = http_call(self.http_port, "GET", "/readyz", timeout=2)
            except OSError:
                status = None
            if status == 200:
                return time.monotonic() - t0
            if time.monotonic() - t0 > ready_timeout:
                raise SetupError("relay not ready within %ss:\n%s" % (ready_timeout, tail(self.log_path)))
            time.sleep(0.05)

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        PROCS.forget(self.proc)
        self.proc = None

    def terminate(self, timeout=120):
        """SIGTERM; returns the seconds until the process exited."""
        t0 = time.monotonic()
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise PhaseFailed("relay did not exit within %ss of SIGTERM:\n%s" % (timeout, tail(self.log_path)))
        PROCS.forget(self.proc)
        self.proc = None
        return time.monotonic() - t0

    def webhook(self):
        body = '{"object_kind":"push","ref":"refs/heads/main","project":{"git_http_url":"%s"}}' % self.repo
        status, answer = http_call(self.http_port, "POST", "/hooks/gitlab", body,
                                   {"X-Gitlab-Token": self.hook_token, "Content-Type": "application/json"}, timeout=30)
        if status != 202:
            raise PhaseFailed("webhook answered %s: %s" % (status, answer.decode(errors="replace")))

    def rss_kib(self):
        return proc_status_kib(self.pid, "VmRSS") if self.pid else None


class Fleet:
    """relay-bench fleet: JSON lines read on a thread; commands on its stdin."""

    def __init__(self, binary, work, n, addresses, port, ca, heartbeat_messages=False):
        self.log_path = os.path.join(work, "fleet.log")
        relay = ",".join("%s:%d" % (a, port) for a in addresses)
        self.proc = PROCS.start([binary, "fleet", "--relay", relay, "--ca", ca, "--agents", str(n),
                                 "--name-format", NAME_FORMAT, "--token-prefix", TOKEN_PREFIX]
                                + (["--heartbeat-messages"] if heartbeat_messages else []),
                                self.log_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=HARNESS_ENV)
        self.progress = None
        self.reports = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if obj.get("type") == "progress":
                self.progress = obj
            elif obj.get("type") == "report":
                self.reports.put(obj)

    def send(self, command):
        if self.proc.poll() is not None:
            raise PhaseFailed("relay-bench fleet exited (status %s):\n%s" % (self.proc.returncode, tail(self.log_path)))
        self.proc.stdin.write((command + "\n").encode())
        self.proc.stdin.flush()

    def report(self, timeout=30):
        while not self.reports.empty():
            self.reports.get_nowait()
        self.send("report")
        try:
            return self.reports.get(timeout=timeout)
        except queue.Empty:
            raise PhaseFailed("relay-bench fleet gave no report within %ss:\n%s" % (timeout, tail(self.log_path)))

    def stop(self):
        try:
            self.send("quit")
            self.proc.stdin.close()
            self.proc.wait(30)
        except (PhaseFailed, OSError, subprocess.TimeoutExpired):
            pass
        PROCS.stop(self.proc)


def artifact_for(report, commit):
    for a in report.get("artifacts", []):
        if a["revision"].endswith(commit):
            return a
    return None


# =====================================================================
# Phases
# =====================================================================

def wait_all_back(fleet, n, cap, what, relay=None):
    """Polls reports until all n agents are live and each had a Welcome since the mark;
    returns (seconds since the mark for the last one, or None, and the last report)."""
    deadline = time.monotonic() + cap
    last_note = time.monotonic()
    while True:
        r = fleet.report()
        epoch = r["epoch"]
        coverage = epoch["latest_welcome_coverage_s"]
        if r["gauges"]["welcomed"] >= n and coverage.get("p100") is not None:
            return coverage["p100"], r
        if relay is not None and relay.proc is not None and relay.proc.poll() is not None:
            raise PhaseFailed("relay-server exited (status %s) during %s:\n%s"
                              % (relay.proc.returncode, what, tail(relay.log_path)))
        if time.monotonic() > deadline:
            return None, r
        if time.monotonic() - last_note > 10:
            last_note = time.monotonic()
            log("  %s: %d/%d live, %d welcomed since the mark, %.0f s"
                % (what, r["gauges"]["welcomed"], n, epoch["welcomed"], epoch["seconds_since_mark"]))
        time.sleep(0.5)


def run_size(args, n, caps):
    work = tempfile.mkdtemp(prefix="relay-fleet-bench-%d-" % n)
    result = {"agents": n, "work_dir": work}
    k = args.addresses or min(8, max(1, math.ceil(n / 4000)))
    addresses = ["127.0.0.%d" % (i + 1) for i in range(k)]
    result["addresses"] = addresses
    relay = fleet = None
    try:
        tls = make_certs(os.path.join(work, "tls"), addresses)
        repo = os.path.join(work, "repo")
        make_repo(repo)
        revision = [0]
        relay = Relay(args.relay_server, work, n, addresses, tls, repo, args.heartbeat,
                      [item.strip() for item in args.limits.split(",") if item.strip()] if args.limits else None)
        ready = relay.start()
        time.sleep(1.0)
        base_rss = relay.rss_kib()
        result["relay_ready_s"] = ready
        result["relay_rss_before_fleet_kib"] = base_rss
        log("[%d] relay ready in %.1f s (RSS %.1f MiB with no agent connected); starting the fleet"
            % (n, ready, (base_rss or 0) / 1024))

        # a: cold start — the whole fleet at once.
        fleet = Fleet(args.relay_bench, work, n, addresses, relay.tunnel_port, tls["ca"], args.heartbeat_messages)
        t, r = wait_all_back(fleet, n, caps["a"], "cold start", relay)
        result["a"] = {"all_welcomed_s": t, "welcomed": r["epoch"]["welcomed"],
                       "coverage_s": r["epoch"]["welcome_coverage_s"], "counters": r["counters"]}
        log("[%d] a: %s" % (n, ("all %d welcomed in %.2f s" % (n, t)) if t is not None
                               else "only %d of %d welcomed within %d s" % (r["epoch"]["welcomed"], n, caps["a"])))

        # b: idle.
        if "b" in args.only:
            time.sleep(2)
            fleet.send("mark")  # heartbeat round trips of the idle fleet only
            c0, h0, w0 = proc_cpu_seconds(relay.pid), proc_cpu_seconds(fleet.proc.pid), time.monotonic()
            time.sleep(args.idle_seconds)
            c1, h1, w1 = proc_cpu_seconds(relay.pid), proc_cpu_seconds(fleet.proc.pid), time.monotonic()
            rss = relay.rss_kib()
            r = fleet.report()
            wall = w1 - w0
            result["b"] = {
                "seconds": wall, "live": r["gauges"]["welcomed"],
                "relay_rss_kib": rss, "relay_rss_per_agent_kib": (rss - base_rss) / n if rss and base_rss else None,
                "relay_cpu_pct": 100 * (c1 - c0) / wall if c0 is not None and c1 is not None else None,
                "harness_cpu_pct": 100 * (h1 - h0) / wall if h0 is not None and h1 is not None else None,
                "harness_rss_kib": proc_status_kib(fleet.proc.pid, "VmRSS"),
                "harness_rss_per_agent_kib": (proc_status_kib(fleet.proc.pid, "VmRSS") or 0) / n,
                "heartbeat_rtt_ms": r["epoch"]["heartbeat_rtt_ms"],
                # Sessions that ended during the idle window (steady means none).
                "dropped": sum(r["epoch"]["since_mark"]["disconnects"].values()),
            }
            b = result["b"]
            log("[%d] b: relay %.1f KiB/agent, %.1f %% CPU idle; harness %.1f KiB/agent, %.1f %% CPU; %d live, %d sessions dropped in %.0f s"
                % (n, b["relay_rss_per_agent_kib"] or float("nan"), b["relay_cpu_pct"] or float("nan"),
                   b["harness_rss_per_agent_kib"], b["harness_cpu_pct"] or float("nan"), b["live"], b["dropped"], wall))

        # c: fan-out of a new revision.
        if "c" in args.only:
            revision[0] += 1
            commit = commit_revision(repo, revision[0])
            relay.webhook()
            deadline = time.monotonic() + caps["c"]
            art = None
            while time.monotonic() < deadline:
                art = artifact_for(fleet.report(), commit)
                if art and art["received"] >= n:
                    break
                time.sleep(0.5)
            received = art["received"] if art else 0
            result["c"] = {"commit": commit, "received": received, "missed": n - received,
                           "fanout_ms": art["fanout_ms"] if art else None}
            log("[%d] c: fan-out to %d/%d agents: p50 %s ms, p99 %s ms, max %s ms"
                % (n, received, n, *(fmt(art and art["fanout_ms"].get(q)) for q in ("p50", "p99", "max"))))

        # d: kill -9 and restart.
        if "d" in args.only:
            fleet.send("mark")
            relay.kill9()
            ready = relay.start()
            t, r = wait_all_back(fleet, n, caps["d"], "kill -9 restart", relay)
            result["d"] = {"all_back_s": t, "relay_ready_s": ready, "welcomed_since_mark": r["epoch"]["welcomed"],
                           "live": r["gauges"]["welcomed"], "since_mark": r["epoch"]["since_mark"]}
            log("[%d] d: kill -9 + restart: %s" % (n, ("all back in %.2f s" % t) if t is not None
                                                  else "%d of %d live after %d s" % (r["gauges"]["welcomed"], n, caps["d"])))

        # e: graceful restart.
        if "e" in args.only:
            fleet.send("mark")
            time.sleep(0.2)
            drain = relay.terminate(timeout=caps["e"])
            ready = relay.start()
            t, r = wait_all_back(fleet, n, caps["e"], "graceful restart", relay)
            result["e"] = {"all_back_s": t, "drain_s": drain, "relay_ready_s": ready,
                           "live": r["gauges"]["welcomed"], "since_mark": r["epoch"]["since_mark"]}
            log("[%d] e: SIGTERM → exit %.2f s; %s" % (n, drain, ("all back %.2f s after SIGTERM" % t) if t is not None
                                                        else "%d of %d live after %d s" % (r["gauges"]["welcomed"], n, caps["e"])))

        # f: 1 MiB artifact fetched by every agent.
        if "f" in args.only:
            fleet.send("fetch on")
            current = [a for a in fleet.report()["artifacts"]]
            deadline = time.monotonic() + caps["f_warmup"]
            while current and time.monotonic() < deadline:
                latest = fleet.report()["artifacts"][-1]
                if latest["fetched_verified"] >= n:
                    break
                time.sleep(0.5)
            fleet.send("mark")
            before = fleet.report()["counters"]
            hwm_before = proc_status_kib(relay.pid, "VmHWM")
            commit = commit_bulk(repo, args.bulk_mib)
            t0 = time.monotonic()
            relay.webhook()
            peak = relay.rss_kib() or 0
            art = None
            deadline = t0 + caps["f"]
            while time.monotonic() < deadline:
                peak = max(peak, relay.rss_kib() or 0)
                art = artifact_for(fleet.report(), commit)
                if art and art["fetched_verified"] >= n:
                    break
                time.sleep(0.5)
            wall = time.monotonic() - t0
            r = fleet.report()
            done = art["fetched_verified"] if art else 0
            result["f"] = {
                "commit": commit, "bulk_mib": args.bulk_mib, "fetched_verified": done, "missing": n - done,
                "all_s": wall if done >= n else None, "webhook_to_last_s": wall,
                "fetch_done_ms": art["fetch_done_ms"] if art else None,
                "relay_peak_rss_kib": peak, "relay_vmhwm_kib": proc_status_kib(relay.pid, "VmHWM"),
                "relay_vmhwm_before_kib": hwm_before,
                "fetches_failed": r["counters"]["fetches_failed"] - before["fetches_failed"],
                "fetches_refused": r["counters"]["fetches_refused"] - before["fetches_refused"],
                "disconnects": r["epoch"]["since_mark"]["disconnects"],
                "errors": r["epoch"]["since_mark"].get("errors", {}),
            }
            f = result["f"]
            log("[%d] f: %d/%d fetched+verified %.1f MiB in %.1f s; relay RSS peak %.0f MiB; %d failed, %d refused"
                % (n, done, n, args.bulk_mib, wall, peak / 1024, f["fetches_failed"], f["fetches_refused"]))

        final = fleet.report()
        result["harness"] = final["harness"]
        result["harness_final_counters"] = final["counters"]
        fleet.stop()
        fleet = None
        relay.terminate(timeout=60)
        return result
    except (PhaseFailed, SetupError, OSError) as e:  # OSError: a webhook or readiness call timed out
        result["error"] = "%s: %s" % (type(e).__name__, e)
        log("[%d] FAILED: %s" % (n, e))
        if relay is not None:
            log("---- relay log (tail) ----\n%s" % tail(relay.log_path))
        if fleet is not None:
            log("---- fleet log (tail) ----\n%s" % tail(fleet.log_path, 2000))
        return result
    finally:
        if fleet is not None:
            PROCS.stop(fleet.proc)
        if relay is not None and relay.proc is not None:
            PROCS.stop(relay.proc)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            result.pop("work_dir", None)


def fmt(v, unit=""):
    if v is None:
        return "—"
    return ("%.0f" % v if abs(v) >= 100 else "%.1f" % v) + unit


def fmt_s(v):
    return "—" if v is None else "%.1f s" % v


def table(results):
    lines = ["| agents | relay RSS per agent | relay CPU, idle fleet | fan-out p99 | kill -9 + restart: all back "
             "| graceful restart: all back | 1 MB artifact fetched by every agent (time, relay RSS peak) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        b, c, d, e, f = (r.get(k) or {} for k in "bcdef")
        back_d = fmt_s(d.get("all_back_s")) if d.get("all_back_s") is not None else (
            "%s/%s live" % (d.get("live"), r["agents"]) if d else "—")
        back_e = fmt_s(e.get("all_back_s")) if e.get("all_back_s") is not None else (
            "%s/%s live" % (e.get("live"), r["agents"]) if e else "—")
        if e.get("drain_s") is not None:
            back_e += " (drain %.1f s)" % e["drain_s"]
        bulk = "—"
        if f:
            when = fmt_s(f.get("all_s")) if f.get("all_s") is not None else "%d/%d in %.0f s" % (
                f["fetched_verified"], r["agents"], f["webhook_to_last_s"])
            bulk = "%s, %.0f MiB (VmHWM %.0f MiB)" % (when, f["relay_peak_rss_kib"] / 1024, (f["relay_vmhwm_kib"] or 0) / 1024)
            if f["fetches_failed"] or f["fetches_refused"]:
                bulk += "; %d failed, %d refused" % (f["fetches_failed"], f["fetches_refused"])
            dropped = sum(f["disconnects"].values())
            if dropped:
                bulk += "; %d sessions dropped (%s)" % (dropped, ", ".join(
                    "%s %d" % (k, v) for k, v in sorted(f["disconnects"].items()) if v))
                if f.get("errors"):
                    bulk += "; errors: " + "; ".join("%d× %s" % (v, k) for k, v in
                                                    sorted(f["errors"].items(), key=lambda kv: -kv[1])[:3])
        fan = "—"
        if c:
            fan = fmt(c["fanout_ms"] and c["fanout_ms"].get("p99"), " ms")
            if c["missed"]:
                fan += " (%d missed)" % c["missed"]
        lines.append("| %d | %s | %s | %s | %s | %s | %s |" % (
            r["agents"], fmt(b.get("relay_rss_per_agent_kib"), " KiB"), fmt(b.get("relay_cpu_pct"), " %"),
            fan, back_d, back_e, bulk))
    lines += ["", "| agents | cold start: all welcomed | harness RSS per agent | harness CPU, idle fleet | heartbeat RTT p50 / p99 |",
              "|---|---|---|---|---|"]
    for r in results:
        a, b = r.get("a") or {}, r.get("b") or {}
        rtt = b.get("heartbeat_rtt_ms") or {}
        cold = fmt_s(a.get("all_welcomed_s")) if a.get("all_welcomed_s") is not None else (
            "%s/%s" % (a.get("welcomed"), r["agents"]) if a else "—")
        lines.append("| %d | %s | %s | %s | %s / %s ms |" % (
            r["agents"], cold, fmt(b.get("harness_rss_per_agent_kib"), " KiB"), fmt(b.get("harness_cpu_pct"), " %"),
            fmt(rtt.get("p50")), fmt(rtt.get("p99"))))
    for r in results:
        if "error" in r:
            lines.append("\n%d agents: FAILED: %s" % (r["agents"], r["error"].splitlines()[0]))
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", default="1000,5000,10000", help="fleet sizes, comma-separated (default 1000,5000,10000)")
    ap.add_argument("--only", default=PHASES, help="phases to run, e.g. a,b,c (a always runs; default all)")
    ap.add_argument("--idle-seconds", type=float, default=None, help="phase b sampling window (default 30; 10 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smaller caps (a 60 s, c 30 s, d 60 s, e 90 s, f 90 s)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of the tables")
    ap.add_argument("--relay-server", default=os.path.join(ROOT, ".build", "release", "relay-server"))
    ap.add_argument("--relay-bench", default=os.path.join(ROOT, ".build", "release", "relay-bench"))
    ap.add_argument("--addresses", type=int, default=0,
                    help="loopback addresses to spread agents over (0 = auto: one per 4000 agents, at most 8)")
    ap.add_argument("--limits", default=None,
                    help="extra relay limits, comma-separated YAML fields, e.g. 'sessionsPerSecond: 1000, maxPendingHandshakes: 4096'")
    ap.add_argument("--heartbeat", default=None, help="relay limits.heartbeatInterval, e.g. 5s (default: the relay's)")
    ap.add_argument("--heartbeat-messages", action="store_true",
                    help="agents send Heartbeat messages instead of transport keepalive PINGs (agents that predate it)")
    ap.add_argument("--bulk-mib", type=float, default=1.0, help="size of the incompressible file in phase f (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep each size's temporary directory (logs, relay data)")
    args = ap.parse_args(argv)
    try:
        args.sizes = [int(x) for x in args.agents.split(",") if x.strip()]
    except ValueError:
        ap.error("--agents: comma-separated integers")
    if not args.sizes or min(args.sizes) < 1:
        ap.error("--agents: at least one size >= 1")
    args.only = set(args.only.replace(",", "")) | {"a"}
    if not args.only <= set(PHASES):
        ap.error("--only: phases are a..f")
    if args.idle_seconds is None:
        args.idle_seconds = 10.0 if args.quick else 30.0
    if not 0 <= args.addresses <= 254:
        ap.error("--addresses: 0..254")
    return args


def main(argv):
    args = parse_args(argv)
    for binary in (args.relay_server, args.relay_bench):
        if not os.access(binary, os.X_OK):
            raise SetupError("%s is not an executable: build it (swift build -c release --product %s) or pass its path"
                             % (binary, os.path.basename(binary)))
    for tool in ("git", "openssl"):
        if not shutil.which(tool):
            raise SetupError("%s not found on PATH" % tool)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = {"soft": soft, "hard": hard}
    needed = max(args.sizes) + 1000
    if hard != resource.RLIM_INFINITY and hard < needed:
        log("WARNING: the open-file hard limit is %d, below %d (largest fleet + 1000): relay-server and relay-bench "
            "raise their soft limit only up to it, so agents beyond it fail to connect. Raise it (e.g. "
            "`ulimit -Hn %d` as root, or LimitNOFILE / limits.conf) and run again." % (hard, needed, needed))
        limits["sufficient"] = False
    else:
        log("open-file limit: soft %s, hard %s (>= %d needed: ok)" % (soft, hard, needed))
        limits["sufficient"] = True
    try:  # children inherit it (the Swift binaries raise it themselves too)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    caps = QUICK_CAPS if args.quick else CAPS
    results = []
    for n in args.sizes:
        log("=== %d agents ===" % n)
        results.append(run_size(args, n, caps))
    summary = {"file_limits": limits, "caps_s": caps, "harness_glibc_tunables": HARNESS_ENV.get("GLIBC_TUNABLES"), "idle_seconds": args.idle_seconds, "results": results,
               "machine": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()}}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(table(results))
    return 3 if any("error" in r for r in results) else 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    code = 0
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    except SetupError as e:
        log("error: %s" % e)
        code = 2
    finally:
        PROCS.stop_all()  # also on any other exception
    sys.exit(code)
