#!/usr/bin/env python3
"""What rollout governance costs a relay with a large fleet: relay-server with N agents
(default 10,000) granted one Git source, idle (no agent connected), measured for CPU and
memory over a window once the source is packaged, side by side:

  plain      no rollout rules: the reference
  freeze     a `freezes:` entry that is not open now (the source is governed: the rollout
             controller's pass runs every second over every agent)
  waves      `rollout.waves` with three waves over the fleet

Usage: python3 Benchmarks/rollout_bench.py [--agents 10000] [--seconds 30] [--binary PATH]
(after `swift build -c release --product relay-server`). Prints a table and JSON.
"""

import argparse
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(binary, work, agents, variant, seconds, perf=False):
    data = os.path.join(work, variant)
    os.makedirs(data)
    port, http = free_port(), free_port()
    reader = secrets.token_hex(16)
    lines = [
        f"listen: 127.0.0.1:{port}",
        f"http: 127.0.0.1:{http}",
        f"tls: {{certFile: {work}/tls/server.pem, keyFile: {work}/tls/server-key.pem}}",
        f"dataDir: {data}/relay-data",
        "sources:",
        f"  - name: podinfo",
        f"    url: {work}/repo",
        "    ref: {branch: main}",
        "    interval: 1h",
    ]
    if variant == "waves":
        lines.append('    rollout: {waves: [{agents: ["edge-0000*"]}, {agents: ["edge-00*"], soak: 10m}, {agents: ["*"]}]}')
    if variant == "freeze":
        lines.append('freezes: [{name: never-now, start: "0 0 1 1 *", end: "1 0 1 1 *", agents: ["edge-*"]}]')
    lines.append(f"readers: [{{name: bench, tokenSHA256: {hashlib.sha256(reader.encode()).hexdigest()}}}]")
    lines.append("agents:")
    for index in range(agents):
        token = hashlib.sha256(f"{variant}-{index}".encode()).hexdigest()
        lines.append(f"  - {{name: edge-{index:05d}, tokenSHA256: {token}, sources: [podinfo]}}")
    config = os.path.join(data, "relay.yaml")
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    log = open(os.path.join(data, "relay.log"), "w")
    started = time.monotonic()
    process = subprocess.Popen([binary, "serve", "--config", config], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{http}/api/v1/sources/podinfo/revisions"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(url, headers={"Authorization": f"Bearer {reader}"})
                with urllib.request.urlopen(request, timeout=5) as answer:
                    if json.load(answer):
                        break
            except OSError:
                pass
            if process.poll() is not None:
                raise SystemExit(f"relay-server exited: see {data}/relay.log")
            time.sleep(0.5)
        else:
            raise SystemExit("the source was not packaged in 300 s")
        ready = time.monotonic() - started
        time.sleep(5)  # the first passes (assignments written) are not the steady state
        before = cpu_seconds(process.pid)
        if perf:
            out = os.path.join(data, "perf.data")
            subprocess.run(["perf", "record", "-q", "-F", "499", "-g", "-o", out, "-p", str(process.pid), "--", "sleep", str(seconds)],
                           capture_output=True)
            report = subprocess.run(["perf", "report", "-i", out, "--stdio", "--no-children", "--percent-limit", "2", "-g", "none"],
                                    capture_output=True, text=True).stdout
            print(f"== perf: {variant}\n" + "\n".join(l for l in report.splitlines() if l.strip() and not l.startswith("#"))[:4000],
                  file=sys.stderr)
        else:
            time.sleep(seconds)
        used = cpu_seconds(process.pid) - before
        return {"variant": variant, "agents": agents, "readySeconds": round(ready, 2),
                "cpuPercent": round(100 * used / seconds, 1), "rssMiB": round(rss_mib(process.pid), 1)}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build/release/relay-server"))
    parser.add_argument("--variants", default="plain,freeze,waves", help="comma-separated; the first is the reference")
    parser.add_argument("--perf", action="store_true", help="perf record each window; print the top symbols")
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        raise SystemExit(f"{args.binary} missing: swift build -c release --product relay-server")
    work = tempfile.mkdtemp(prefix="rollout-bench-")
    try:
        subprocess.run([args.binary, "dev-certs", "--dir", os.path.join(work, "tls")], check=True, capture_output=True)
        repo = os.path.join(work, "repo")
        subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
        with open(os.path.join(repo, "app.yaml"), "w") as f:
            f.write("kind: ConfigMap\n")
        env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x")
        subprocess.run(["git", "-C", repo, "add", "."], check=True)
        subprocess.run(["git", "-C", repo, "commit", "-qm", "one"], check=True, env=env)
        results = [run(args.binary, work, args.agents, variant, args.seconds, args.perf) for variant in args.variants.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[0]
    print(f"{'variant':8} {'agents':>7} {'ready s':>8} {'idle CPU %':>11} {'× plain':>8} {'RSS MiB':>8}")
    for r in results:
        ratio = r["cpuPercent"] / base["cpuPercent"] if base["cpuPercent"] else float("inf")
        print(f"{r['variant']:8} {r['agents']:>7} {r['readySeconds']:>8} {r['cpuPercent']:>11} {ratio:>8.1f} {r['rssMiB']:>8}")
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
