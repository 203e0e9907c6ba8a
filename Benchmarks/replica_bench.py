#!/usr/bin/env python3
"""Replica benchmark: one relay on SQLite against three replicas on one PostgreSQL, same fleet.

Side by side in one run, for each fleet size in --agents (default 2500), in fresh temporary
directories: the fleet of `relay-bench fleet` (fleet_bench.py's harness: one TLS 1.3 +
HTTP/2 connection per simulated agent, relay-agent's transport settings and reconnect rules)
first against one relay-server with its embedded SQLite, then against --replicas (default 3)
relay-servers sharing one PostgreSQL (Debian's server, started here with initdb on loopback
in its own directory; as the `postgres` user when run as root), each replica with its own
data directory, one signing key, agents spread over them round-robin and moving to the next
replica when a session fails (`--failover`, relay-agent's `relays:`). Phases:

  a  cold start   the whole fleet at once: time until all N have a Welcome.
  c  fan-out      commit, webhook to the first relay (replica) only: p50/p99/max of (arrival in
                  a DesiredState - the artifact's creation), and how many missed it.
  s  status       every agent sends --status-entries status events (batches of <= 100, the
                  next after its StatusAck, as relay-agent's uplink): entries stored and
                  acknowledged per second over the whole burst.
  d  failover     kill -9 of one relay. One relay (SQLite): it is started again at once (its
                  agents have nowhere else to go). Replicas: the second replica is killed and
                  not restarted; its agents move to the others. Time from the kill until all
                  N are welcomed again.

Output: progress on stderr, a side-by-side table (ratios replicas / single) on stdout, or JSON
with --json. Exit status: 0, 2 = setup error, 3 = a phase failed, 130 = interrupted.

  swift build -c release --product relay-server && swift build -c release --product relay-bench
  python3 Benchmarks/replica_bench.py --agents 2500
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet_bench as fb  # noqa: E402  (the fleet harness and relay control are shared)

CAPS = {"a": 180, "c": 60, "s": 300, "d": 120}


class Postgres:
    """A throwaway PostgreSQL cluster on loopback (initdb, trust auth, fsync on)."""

    def __init__(self, work):
        versions = sorted(int(v) for v in os.listdir("/usr/lib/postgresql") if v.isdigit()) if os.path.isdir("/usr/lib/postgresql") else []
        if not versions:
            raise fb.SetupError("no PostgreSQL server under /usr/lib/postgresql: install Debian's postgresql (scripts/setup.sh)")
        self.bin = "/usr/lib/postgresql/%d/bin" % versions[-1]
        self.dir = os.path.join(work, "postgres")
        os.makedirs(self.dir)
        self.as_root = os.getuid() == 0
        if self.as_root:
            shutil.chown(work, "postgres", "postgres")
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = fb.free_port()
        self.data = os.path.join(self.dir, "data")
        fb.run(self.cmd("initdb", ["-D", self.data, "-U", "relay", "--auth=trust", "--encoding=UTF8", "--locale=C"]))
        self.proc = fb.PROCS.start(self.cmd("postgres", ["-D", self.data, "-h", "127.0.0.1", "-p", str(self.port), "-k", self.dir,
                                                         "-c", "max_connections=300", "-c", "shared_buffers=128MB"]),
                                   os.path.join(self.dir, "postgres.log"))
        deadline = time.monotonic() + 60
        while subprocess.run(self.cmd("pg_isready", ["-h", "127.0.0.1", "-p", str(self.port), "-U", "relay"]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise fb.SetupError("PostgreSQL did not start:\n%s" % fb.tail(os.path.join(self.dir, "postgres.log")))
            time.sleep(0.2)
        fb.run([self.bin + "/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "relay", "-d", "postgres",
                "-c", "CREATE DATABASE relay"])

    def cmd(self, name, args):
        binary = os.path.join(self.bin, name)
        return (["runuser", "-u", "postgres", "--", binary] if self.as_root else [binary]) + args

    def stop(self):
        fb.PROCS.stop(self.proc)


class ReplicaFleet(fb.Fleet):
    """The fleet dialling several relays (host:port each), failing over between them."""

    def __init__(self, binary, work, n, targets, ca):
        self.log_path = os.path.join(work, "fleet.log")
        self.proc = fb.PROCS.start([binary, "fleet", "--relay", ",".join(targets), "--ca", ca, "--agents", str(n),
                                    "--name-format", fb.NAME_FORMAT, "--token-prefix", fb.TOKEN_PREFIX]
                                   + (["--failover"] if len(targets) > 1 else []),
                                   self.log_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=fb.HARNESS_ENV)
        self.progress = None
        self.reports = fb.queue.Queue()
        self.reader = fb.threading.Thread(target=self._read, daemon=True)
        self.reader.start()


def run_setup(args, n, replicas, label):
    """One configuration: `replicas` == 0 means one relay on SQLite."""
    work = tempfile.mkdtemp(prefix="relay-replica-bench-%s-%d-" % (label, n))
    result = {"setup": label, "agents": n, "relays": max(1, replicas), "work_dir": work}
    postgres = fleet = None
    relays = []
    try:
        tls = fb.make_certs(os.path.join(work, "tls"), ["127.0.0.1"])
        repo = os.path.join(work, "repo")
        fb.make_repo(repo)
        key = os.path.join(work, "signing.key")
        fb.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
        if replicas:
            postgres = Postgres(work)
        for index in range(max(1, replicas)):
            relay_dir = os.path.join(work, "relay-%d" % index)
            os.makedirs(relay_dir)
            relay = fb.Relay(args.relay_server, relay_dir, n, ["127.0.0.1"], tls, repo, None)
            with open(relay.config, "a") as f:
                f.write("signing: {keyFile: %s}\nreplica: r%d\n" % (key, index))
                if postgres:
                    f.write("database: {postgres: {host: 127.0.0.1, port: %d, database: relay, user: relay}}\n" % postgres.port)
            relays.append(relay)
        for relay in relays:
            relay.start()
        fb.log("[%s %d] %d relay(s) ready; starting the fleet" % (label, n, len(relays)))

        fleet = ReplicaFleet(args.relay_bench, work, n, ["127.0.0.1:%d" % r.tunnel_port for r in relays], tls["ca"])
        t, r = fb.wait_all_back(fleet, n, CAPS["a"], "cold start", relays[0])
        result["a"] = {"all_welcomed_s": t, "welcomed": r["epoch"]["welcomed"]}
        fb.log("[%s %d] a: %s" % (label, n, "all welcomed in %.2f s" % t if t is not None else "only %d welcomed" % r["epoch"]["welcomed"]))
        time.sleep(2)

        commit = fb.commit_revision(repo, 1)
        relays[0].webhook()
        deadline = time.monotonic() + CAPS["c"]
        art = None
        while time.monotonic() < deadline:
            art = fb.artifact_for(fleet.report(), commit)
            if art and art["received"] >= n:
                break
            time.sleep(0.5)
        received = art["received"] if art else 0
        result["c"] = {"received": received, "missed": n - received, "fanout_ms": art["fanout_ms"] if art else None}
        fb.log("[%s %d] c: fan-out to %d/%d: p50 %s ms, p99 %s ms" % (label, n, received, n,
               fb.fmt(art and art["fanout_ms"].get("p50")), fb.fmt(art and art["fanout_ms"].get("p99"))))

        total = n * args.status_entries
        before = fleet.report()["counters"]["status_acked"]
        t0 = time.monotonic()
        fleet.send("status %d" % args.status_entries)
        acked = before
        while time.monotonic() - t0 < CAPS["s"]:
            acked = fleet.report()["counters"]["status_acked"]
            if acked - before >= total:
                break
            time.sleep(0.25)
        seconds = time.monotonic() - t0
        result["s"] = {"entries": acked - before, "expected": total, "seconds": seconds,
                       "per_second": (acked - before) / seconds if seconds > 0 else None}
        fb.log("[%s %d] s: %d/%d status entries stored and acknowledged in %.1f s: %.0f/s"
               % (label, n, acked - before, total, seconds, result["s"]["per_second"] or 0))

        fleet.send("mark")
        victim = relays[1] if len(relays) > 1 else relays[0]
        # Agent slot k dials relay k mod count first: the victim holds these many.
        moved = n if len(relays) == 1 else len(range(1, n, len(relays)))
        t0 = time.monotonic()
        victim.kill9()
        if len(relays) == 1:
            victim.start()
        back = None
        while time.monotonic() - t0 < CAPS["d"]:
            r = fleet.report()
            if r["gauges"]["welcomed"] >= n and r["epoch"]["welcomed"] >= moved:
                back = time.monotonic() - t0
                break
            time.sleep(0.1)
        result["d"] = {"all_back_s": back, "welcomed_since_mark": r["epoch"]["welcomed"], "live": r["gauges"]["welcomed"]}
        fb.log("[%s %d] d: kill -9 of %s: %s" % (label, n, "the relay (restarted)" if len(relays) == 1 else "replica r1 (not restarted)",
               "all %d back in %.2f s (%d sessions moved)" % (n, back, r["epoch"]["welcomed"]) if back is not None
               else "%d of %d live" % (r["gauges"]["welcomed"], n)))
    except fb.PhaseFailed as e:
        result["error"] = str(e)
        fb.log("[%s %d] FAILED: %s" % (label, n, e))
    finally:
        if fleet:
            fleet.stop()
        for relay in relays:
            if relay.proc:
                fb.PROCS.stop(relay.proc)
        if postgres:
            postgres.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


def table(pairs):
    rows = [("cold start, all welcomed (s)", lambda r: r.get("a", {}).get("all_welcomed_s")),
            ("fan-out p99 (ms)", lambda r: (r.get("c", {}).get("fanout_ms") or {}).get("p99")),
            ("fan-out missed", lambda r: r.get("c", {}).get("missed")),
            ("status entries stored / s", lambda r: r.get("s", {}).get("per_second")),
            ("all back after kill -9 (s)", lambda r: r.get("d", {}).get("all_back_s"))]
    out = []
    for single, replicated in pairs:
        out.append("%d agents | 1 relay, SQLite | %d replicas, PostgreSQL | ratio" % (single["agents"], replicated["relays"]))
        out.append("---|---|---|---")
        for name, get in rows:
            a, b = get(single), get(replicated)
            ratio = "%.2f" % (b / a) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "–"
            out.append("%s | %s | %s | %s" % (name, fb.fmt(a), fb.fmt(b), ratio))
        out.append("")
    return "\n".join(out)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", default="2500", help="fleet sizes, comma-separated (default 2500)")
    ap.add_argument("--replicas", type=int, default=3, help="relay replicas on PostgreSQL (default 3)")
    ap.add_argument("--status-entries", type=int, default=20, help="status entries each agent sends in phase s (default 20)")
    ap.add_argument("--relay-server", default=os.path.join(fb.ROOT, ".build", "release", "relay-server"))
    ap.add_argument("--relay-bench", default=os.path.join(fb.ROOT, ".build", "release", "relay-bench"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.agents.split(",") if x.strip()]
    for binary in (args.relay_server, args.relay_bench):
        if not os.access(binary, os.X_OK):
            raise fb.SetupError("%s is not an executable: build it (swift build -c release --product %s)" % (binary, os.path.basename(binary)))
    soft, hard = fb.resource.getrlimit(fb.resource.RLIMIT_NOFILE)
    try:
        fb.resource.setrlimit(fb.resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    pairs = []
    for n in sizes:
        single = run_setup(args, n, 0, "sqlite")
        replicated = run_setup(args, n, args.replicas, "postgres")
        pairs.append((single, replicated))
    if args.json:
        print(json.dumps({"pairs": pairs, "machine": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()}}, indent=2))
    else:
        print(table(pairs))
    return 3 if any("error" in r for pair in pairs for r in pair) else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, fb._terminate)
    code = 0
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        fb.log("interrupted")
        code = 130
    except fb.SetupError as e:
        fb.log("error: %s" % e)
        code = 2
    finally:
        fb.PROCS.stop_all()
    sys.exit(code)
