#!/usr/bin/env python3
"""Relay memory under a Fetch burst: N real relay-agents all fetch one new artifact at once.

Setup (one temporary directory, loopback only): dev certificates (`relay-server dev-certs`),
a Git repository with one small file, a relay granting it to N agents (tokens made here),
N relay-agent processes. Once every agent has its first artifact (relay_deliveries_total
reaches N), the relay's peak RSS is reset (/proc/<pid>/clear_refs 5), a file of
--artifact-mib incompressible bytes is committed and a GitLab push webhook is posted: every
agent fetches the new artifact at the same moment. Measured until relay_deliveries_total
reaches 2N (or --timeout): the relay's VmHWM during the burst, the burst's duration, and the
relay's Fetch admission metrics (when the relay has them). With --bursts K, K new artifacts
one after the other, each measured (VmHWM is not reset between them; RSS 3 s after each).

Run it for two relay-server binaries to compare (same agents, same config):
  swift build -c release --product relay-server --product relay-agent
  python3 Benchmarks/fetch_memory_bench.py --relay-server old/relay-server
  python3 Benchmarks/fetch_memory_bench.py --relay-server .build/release/relay-server
  python3 Benchmarks/fetch_memory_bench.py --limits "maxFetchStreams: 8"

Prints one JSON object. Exit status 0, or 1 when the burst did not finish in --timeout.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(repo, *args):
    subprocess.run(["git", "-C", repo] + list(args), check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
                        "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"})


def metrics(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        try:
            samples[name] = float(value)
        except ValueError:
            pass
    return samples


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relay-server", default=os.path.join(ROOT, ".build/release/relay-server"))
    parser.add_argument("--relay-agent", default=os.path.join(ROOT, ".build/release/relay-agent"))
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--artifact-mib", type=float, default=1)
    parser.add_argument("--limits", default="", help="extra relay.yaml limits fields, e.g. 'maxFetchStreams: 8'")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--bursts", type=int, default=1, help="new artifacts one after the other (a leak grows with each)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="relay-fetch-memory-")
    procs = []
    try:
        subprocess.run([args.relay_server, "dev-certs", "--dir", os.path.join(work, "tls")], check=True, capture_output=True)
        repo = os.path.join(work, "repo")
        os.makedirs(repo)
        git(repo, "init", "-q", "-b", "main")
        with open(os.path.join(repo, "app.yaml"), "w") as f:
            f.write("a: 1\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "initial")

        tunnel, http = free_port(), free_port()
        tls = os.path.join(work, "tls")
        limits = "{heartbeatInterval: 5s%s}" % ((", " + args.limits) if args.limits else "")
        lines = [
            "listen: 127.0.0.1:%d" % tunnel, "http: 127.0.0.1:%d" % http,
            "tls: {certFile: %s/server.pem, keyFile: %s/server-key.pem}" % (tls, tls),
            "dataDir: %s/relay-data" % work, "webhookToken: bench-hook",
            "limits: %s" % limits,
            "sources:", "  - {name: app, url: %s, ref: {branch: main}, interval: 1h}" % repo,
            "agents:",
        ]
        for i in range(args.agents):
            sha = hashlib.sha256(("bench-token-%d" % i).encode()).hexdigest()
            lines.append("  - {name: edge-%04d, tokenSHA256: %s, sources: [app]}" % (i, sha))
        with open(os.path.join(work, "relay.yaml"), "w") as f:
            f.write("\n".join(lines) + "\n")
        relay_log = open(os.path.join(work, "relay.log"), "w")
        relay = subprocess.Popen([args.relay_server, "serve", "--config", os.path.join(work, "relay.yaml")],
                                 stdout=relay_log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(relay)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % http, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if relay.poll() is not None:
                sys.exit("relay-server exited; see %s/relay.log" % work)
            time.sleep(0.2)

        agent_log = open(os.path.join(work, "agents.log"), "w")
        for i in range(args.agents):
            d = os.path.join(work, "agent-%04d" % i)
            os.makedirs(d)
            with open(os.path.join(d, "token"), "w") as f:
                f.write("bench-token-%d\n" % i)
            with open(os.path.join(d, "agent.yaml"), "w") as f:
                f.write("relay: 127.0.0.1:%d\ncaFile: %s/ca.pem\ntokenFile: %s/token\ndataDir: %s/data\n"
                        "reconnectInitial: 500ms\nreconnectMax: 5s\n" % (tunnel, tls, d, d))
            procs.append(subprocess.Popen([args.relay_agent, "run", "--config", os.path.join(d, "agent.yaml")],
                                          stdout=agent_log, stderr=subprocess.STDOUT, start_new_session=True))

        def deliveries():
            return metrics(http).get("relay_deliveries_total", 0)

        deadline = time.time() + args.timeout
        while deliveries() < args.agents and time.time() < deadline:
            time.sleep(0.5)
        settled = deliveries()
        if settled < args.agents:
            sys.exit("only %d of %d agents got the first artifact; see %s" % (settled, args.agents, work))
        time.sleep(2)
        before_hwm = status_kib(relay.pid, "VmHWM")
        idle_rss = status_kib(relay.pid, "VmRSS")
        with open("/proc/%d/clear_refs" % relay.pid, "w") as f:
            f.write("5")  # reset VmHWM to the current RSS

        bursts = []
        for burst in range(1, args.bursts + 1):
            with open(os.path.join(repo, "blob.bin"), "wb") as f:
                f.write(os.urandom(int(args.artifact_mib * (1 << 20))))
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", "burst %d" % burst)
            body = json.dumps({"object_kind": "push", "ref": "refs/heads/main", "project": {"git_http_url": repo}}).encode()
            request = urllib.request.Request("http://127.0.0.1:%d/hooks/gitlab" % http, data=body, method="POST",
                                             headers={"X-Gitlab-Token": "bench-hook", "Content-Type": "application/json"})
            started = time.time()
            urllib.request.urlopen(request, timeout=10).read()
            peak_rss = 0
            deadline = started + args.timeout
            while time.time() < deadline:
                peak_rss = max(peak_rss, status_kib(relay.pid, "VmRSS"))
                if deliveries() >= (burst + 1) * args.agents:
                    break
                time.sleep(0.1)
            finished = deliveries() - burst * args.agents
            seconds = time.time() - started
            burst_hwm = status_kib(relay.pid, "VmHWM")
            time.sleep(3)
            bursts.append({"finished": int(finished), "seconds": round(seconds, 2),
                           "hwm_mib": round(burst_hwm / 1024, 1), "peak_sampled_rss_mib": round(peak_rss / 1024, 1),
                           "rss_3s_after_mib": round(status_kib(relay.pid, "VmRSS") / 1024, 1)})
        m = metrics(http)
        report = {
            "relay_server": args.relay_server, "agents": args.agents, "artifact_mib": args.artifact_mib,
            "limits": args.limits, "relay_idle_rss_mib": round(idle_rss / 1024, 1),
            "relay_hwm_before_burst_mib": round(before_hwm / 1024, 1),
            "bursts": bursts,
            "relay_fetch_refused_total": m.get("relay_fetch_refused_total"),
            "relay_fetches_total": m.get("relay_fetches_total"),
        }
        print(json.dumps(report, indent=2))
        return 0 if all(b["finished"] >= args.agents for b in bursts) else 1
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if args.keep:
            print("kept " + work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
