#!/usr/bin/env python3
"""Benchmark air-gap bundles: `relay-server bundle export` and `relay-agent import` of
--sources sources × --mib MiB each, against `tar cf` and `tar xf` of the same artifact bytes,
in the same run, on the same disk.

Setup (one temporary directory): --sources git repositories, each holding one file of
--mib MiB of random (incompressible) bytes; relay-server (dev certificates, loopback)
packages them as Flux tarballs (.tar.gz) and is stopped once the status API lists every
source. Then, each --runs times (medians reported):
  export   relay-server bundle export --agent edge --output bundle.tar
  import   relay-agent import bundle.tar into a fresh offline agent (name + trust): every
           blob digest, the statement and cosign signatures, Flux's unpack rules
           (gunzip + tar walk), fsync, publish
  tar cf   tar cf of the packaged artifacts (the same bytes the bundle carries)
  tar xf   tar xf of that tar into a fresh directory (and again followed by `sync -f`, since
           import fsyncs what it publishes)
Wall time (monotonic clock around the process) and peak RSS (/usr/bin/time -v, "Maximum
resident set size") of each, and the ratios export/tar cf and import/tar xf. Import's peak
RSS beside the size of one artifact shows it does not hold an artifact in memory.

Examples:
  swift build -c release && python3 Benchmarks/bundle_bench.py --build release
  python3 Benchmarks/bundle_bench.py --build debug --sources 20 --mib 10 --runs 3
Exit 0 on success, 2 on setup errors, 3 if a benchmarked command failed.
"""

import argparse
import hashlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

MIB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(argv, cwd=None):
    """Runs argv under /usr/bin/time -v: (seconds, peak RSS bytes, stdout)."""
    started = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-v"] + argv, cwd=cwd, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.stderr.write(f"command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}\n")
        sys.exit(3)
    rss = 0
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split(":")[-1].strip()) * 1024
    return seconds, rss, proc.stdout


def git(repo, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
    subprocess.run(["git", "-C", repo] + list(args), check=True, capture_output=True, env=env)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--build", choices=["debug", "release"], default="release")
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--mib", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    bin_dir = os.path.join(args.root, ".build", args.build)
    relay_server = os.path.join(bin_dir, "relay-server")
    relay_agent = os.path.join(bin_dir, "relay-agent")
    for binary in (relay_server, relay_agent):
        if not os.access(binary, os.X_OK):
            sys.stderr.write(f"{binary} is missing: swift build -c {args.build}\n")
            return 2
    work = tempfile.mkdtemp(prefix="relay-bundle-bench-")
    relay = None
    try:
        # Sources: one incompressible file each.
        names = [f"src{i:02d}" for i in range(args.sources)]
        for name in names:
            repo = os.path.join(work, "repos", name)
            os.makedirs(repo)
            git(repo, "init", "-q", "-b", "main")
            with open(os.path.join(repo, "data.bin"), "wb") as f:
                f.write(os.urandom(args.mib * MIB))
            with open(os.path.join(repo, "kustomization.yaml"), "w") as f:
                f.write(f"# {name}\nresources: []\n")
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", "initial")
        subprocess.run([relay_server, "dev-certs", "--dir", os.path.join(work, "tls")], check=True, capture_output=True)
        reader = secrets.token_hex(16)
        http_port, tunnel_port = free_port(), free_port()
        tls = os.path.join(work, "tls")
        sources = "".join(f"  - {{name: {n}, url: {os.path.join(work, 'repos', n)}, ref: {{branch: main}}, interval: 1h}}\n" for n in names)
        relay_yaml = os.path.join(work, "relay.yaml")
        with open(relay_yaml, "w") as f:
            f.write(f"listen: 127.0.0.1:{tunnel_port}\nhttp: 127.0.0.1:{http_port}\n"
                    f"tls: {{certFile: {tls}/server.pem, keyFile: {tls}/server-key.pem}}\n"
                    f"dataDir: {work}/relay-data\nwebhookToken: bench\nlimits: {{maxArtifactBytes: {4 * args.mib * MIB + 64 * MIB}}}\n"
                    f"sources:\n{sources}"
                    f"readers:\n  - {{name: bench, tokenSHA256: {hashlib.sha256(reader.encode()).hexdigest()}}}\n"
                    f"agents:\n  - {{name: edge, tokenSHA256: {hashlib.sha256(b'unused').hexdigest()}, sources: [{', '.join(names)}]}}\n")
        log = open(os.path.join(work, "relay.log"), "w")
        relay = subprocess.Popen([relay_server, "serve", "--config", relay_yaml], stdout=log, stderr=log)
        deadline = time.monotonic() + 600
        pending = set(names)
        packaging_started = time.monotonic()
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                try:
                    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/v1/sources/{name}/revisions",
                                                 headers={"Authorization": f"Bearer {reader}"})
                    with urllib.request.urlopen(req, timeout=5) as resp:
                        if json.load(resp):
                            pending.discard(name)
                except OSError:
                    pass
            time.sleep(0.5)
        if pending:
            sys.stderr.write(f"not packaged within 600 s: {sorted(pending)}; see {work}/relay.log\n")
            return 2
        packaging = time.monotonic() - packaging_started
        relay.terminate()
        relay.wait(timeout=30)
        relay = None

        store = os.path.join(work, "relay-data", "store", "artifacts", "sha256")
        artifacts = sorted(os.listdir(store))
        artifact_bytes = sum(os.path.getsize(os.path.join(store, a)) for a in artifacts)
        largest = max(os.path.getsize(os.path.join(store, a)) for a in artifacts)
        pub = os.path.join(work, "relay.pub")
        with open(pub, "w") as f:
            f.write(subprocess.run([relay_server, "keys", "public", "--config", relay_yaml], check=True, capture_output=True, text=True).stdout)

        figures = {"export": [], "import": [], "tar_cf": [], "tar_xf": [], "tar_xf_sync": []}
        bundle_size = 0
        for run in range(args.runs):
            bundle = os.path.join(work, f"bundle-{run}.tar")
            figures["export"].append(timed([relay_server, "bundle", "export", "--config", relay_yaml, "--agent", "edge", "--output", bundle])[:2])
            bundle_size = os.path.getsize(bundle)
            agent_yaml = os.path.join(work, f"agent-{run}.yaml")
            with open(agent_yaml, "w") as f:
                f.write(f"name: edge\ndataDir: {work}/agent-{run}\ntrust: {{relayPublicKeys: [{pub}]}}\n")
            figures["import"].append(timed([relay_agent, "import", "--config", agent_yaml, bundle])[:2])
            reference = os.path.join(work, f"reference-{run}.tar")
            figures["tar_cf"].append(timed(["tar", "cf", reference, "-C", store] + artifacts)[:2])
            out = os.path.join(work, f"untar-{run}")
            os.makedirs(out)
            figures["tar_xf"].append(timed(["tar", "xf", reference, "-C", out])[:2])
            # The same with the bytes on disk, as import leaves them (it fsyncs every artifact).
            shutil.rmtree(out)
            os.makedirs(out)
            figures["tar_xf_sync"].append(timed(["sh", "-c", 'tar xf "$0" -C "$1" && sync -f "$1"', reference, out])[:2])
            for path in (bundle, reference):
                os.unlink(path)
            shutil.rmtree(out)
            shutil.rmtree(os.path.join(work, f"agent-{run}"))

        median = {k: (statistics.median(s for s, _ in v), max(r for _, r in v)) for k, v in figures.items()}
        result = {
            "build": args.build, "sources": args.sources, "mib_each": args.mib, "runs": args.runs,
            "artifact_bytes": artifact_bytes, "largest_artifact_bytes": largest, "bundle_bytes": bundle_size,
            "packaging_seconds": round(packaging, 2),
            **{f"{k}_seconds": round(v[0], 3) for k, v in median.items()},
            **{f"{k}_peak_rss_mib": round(v[1] / MIB, 1) for k, v in median.items()},
            "export_vs_tar_cf": round(median["export"][0] / median["tar_cf"][0], 2),
            "import_vs_tar_xf": round(median["import"][0] / median["tar_xf"][0], 2),
            "import_vs_tar_xf_sync": round(median["import"][0] / median["tar_xf_sync"][0], 2),
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{args.sources} sources × {args.mib} MiB ({artifact_bytes / MIB:.1f} MiB of artifacts, bundle {bundle_size / MIB:.1f} MiB), "
                  f"{args.build} build, median of {args.runs}")
            for key, label in (("export", "bundle export"), ("tar_cf", "tar cf"), ("import", "bundle import"), ("tar_xf", "tar xf"), ("tar_xf_sync", "tar xf + sync")):
                seconds, rss = median[key]
                print(f"  {label:14s} {seconds:7.3f} s  {artifact_bytes / MIB / seconds:7.1f} MiB/s  peak RSS {rss / MIB:6.1f} MiB")
            print(f"  export / tar cf = {result['export_vs_tar_cf']}   import / tar xf = {result['import_vs_tar_xf']}"
                  f"   import / (tar xf + sync) = {result['import_vs_tar_xf_sync']}")
            print(f"  largest artifact {largest / MIB:.1f} MiB; import peak RSS {median['import'][1] / MIB:.1f} MiB")
        return 0
    finally:
        if relay is not None:
            relay.kill()
        if args.keep:
            sys.stderr.write(f"kept {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
