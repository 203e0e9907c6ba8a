#!/usr/bin/env python3
"""Upstream mirroring benchmark: the relay mirroring an OCI artifact from a registry, side by
side with skopeo copying the same artifact out of the same registry (the reference: a plain
download of manifest, config and layer, with digest checks, by a client nobody here wrote).

For each size in --mib (default 64,256), in a fresh temporary directory: Debian's
docker-registry on loopback (plain HTTP, htpasswd Basic auth), a Flux artifact of that many
MiB of incompressible file content pushed with skopeo from an OCI layout, then
  ref    `skopeo copy docker://… dir:…`: wall time and peak RSS (its own wrapper process);
  relay  relay-server with one `oci:` source on that registry: the mirror's duration from the
         relay's own metric (relay_packaging_duration_seconds: resolve, download, digest and
         Flux-rules checks, store), wall time from start to /readyz, and the relay's peak RSS
         (VmHWM) after it.
Output: a table with ratios relay / skopeo on stdout (--json for JSON), progress on stderr.

  swift build -c release --product relay-server
  python3 Benchmarks/upstream_bench.py --mib 64,256
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet_bench as fb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "Tests/RelayTests/Fixtures/helm/helm_fixture.py")


def registry(work):
    port = fb.free_port()
    storage = os.path.join(work, "registry")
    os.makedirs(storage)
    htpasswd = subprocess.run(["htpasswd", "-Bbn", "bench", "bench-pw"], capture_output=True, check=True).stdout
    with open(os.path.join(work, "htpasswd"), "wb") as f:
        f.write(htpasswd)
    config = os.path.join(work, "registry.yml")
    with open(config, "w") as f:
        f.write("version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\n"
                "storage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%d, secret: bench}\n"
                "auth: {htpasswd: {realm: bench, path: %s}}\n" % (storage, port, os.path.join(work, "htpasswd")))
    proc = fb.PROCS.start(["docker-registry", "serve", config], os.path.join(work, "registry.log"))
    for _ in range(200):
        try:
            status, _ = fb.http_call(port, "GET", "/v2/", timeout=1)
            if status in (200, 401):
                return proc, port
        except OSError:
            pass
        time.sleep(0.05)
    raise fb.SetupError("docker-registry did not start:\n" + fb.tail(os.path.join(work, "registry.log")))


def artifact(work, mib):
    """A gzip'd tar of `mib` MiB of random files, as `flux push artifact` would pack it."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(mib):
            data = os.urandom(1 << 20)
            info = tarfile.TarInfo("data/blob-%04d.bin" % i)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    path = os.path.join(work, "artifact.tar.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(raw.getvalue(), compresslevel=1, mtime=0))
    return path


def peak_rss_of(argv):
    """Runs argv in a wrapper whose only child it is: (seconds, peak RSS KiB)."""
    code = ("import resource,subprocess,sys,time;t=time.monotonic();r=subprocess.run(sys.argv[1:]);"
            "print(time.monotonic()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    result = subprocess.run([sys.executable, "-c", code] + argv, capture_output=True, text=True, check=True)
    out = result.stdout.split()
    if out[-1] != "0":
        raise fb.PhaseFailed("%s failed: %s" % (argv[0], result.stderr[-2000:]))
    out = out[-3:]
    return float(out[0]), int(out[1])


def metric(port, name, source):
    _, body = fb.http_call(port, "GET", "/metrics", timeout=5)
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and 'source="%s"' % source in line:
            return float(line.split()[-1])
    return None


def run_size(binary, mib):
    work = tempfile.mkdtemp(prefix="upstream-bench-")
    try:
        _, port = registry(work)
        host = "127.0.0.1:%d" % port
        fb.log("[%d MiB] making the artifact" % mib)
        tarball = artifact(work, mib)
        size = os.path.getsize(tarball)
        layout = os.path.join(work, "layout")
        subprocess.run([sys.executable, FIXTURE, "layout", layout, "v1", "--flux", tarball, "--revision", "main@sha1:abc"],
                       check=True, capture_output=True)
        subprocess.run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", "bench:bench-pw",
                        "oci:%s:v1" % layout, "docker://%s/app:v1" % host], check=True, capture_output=True)
        fb.log("[%d MiB] skopeo copy (reference)" % mib)
        ref_s, ref_kib = peak_rss_of(["skopeo", "copy", "--src-tls-verify=false", "--src-creds", "bench:bench-pw",
                                      "docker://%s/app:v1" % host, "dir:%s" % os.path.join(work, "skopeo-out")])
        fb.log("[%d MiB] relay-server mirroring" % mib)
        tls = fb.make_certs(os.path.join(work, "tls"), ["127.0.0.1"])
        with open(os.path.join(work, "password"), "w") as f:
            f.write("bench-pw\n")
        http_port = fb.free_port()
        config = os.path.join(work, "relay.yaml")
        with open(config, "w") as f:
            f.write("listen: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\ntls: {certFile: %s, keyFile: %s}\ndataDir: %s\n"
                    "limits: {maxArtifactBytes: 8589934592}\n"
                    "sources:\n  - {name: app, oci: {url: oci://%s/app, ref: {tag: v1}, insecure: true, "
                    "auth: {username: bench, passwordFile: %s}}, interval: 1h}\nagents: []\n"
                    % (fb.free_port(), http_port, tls["cert"], tls["key"], os.path.join(work, "relay-data"), host,
                       os.path.join(work, "password")))
        t0 = time.monotonic()
        relay = fb.PROCS.start([binary, "serve", "--config", config], os.path.join(work, "relay.log"))
        while True:
            if relay.poll() is not None:
                raise fb.SetupError("relay-server exited:\n" + fb.tail(os.path.join(work, "relay.log")))
            try:
                if fb.http_call(http_port, "GET", "/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() - t0 > 600:
                raise fb.PhaseFailed("relay not ready in 600 s:\n" + fb.tail(os.path.join(work, "relay.log")))
            time.sleep(0.02)
        ready_s = time.monotonic() - t0
        mirror_s = metric(http_port, "relay_packaging_duration_seconds_sum", "app")
        relay_kib = fb.proc_status_kib(relay.pid, "VmHWM")
        stored = os.path.join(work, "relay-data/store/artifacts/sha256", hashlib.sha256(open(tarball, "rb").read()).hexdigest() + ".tar.gz")
        if not os.path.exists(stored) or os.path.getsize(stored) != size:
            raise fb.PhaseFailed("the relay's store does not hold the artifact")
        fb.PROCS.stop(relay)
        return {"mib": mib, "bytes": size, "skopeo_s": ref_s, "skopeo_peak_kib": ref_kib,
                "relay_mirror_s": mirror_s, "relay_ready_s": ready_s, "relay_peak_kib": relay_kib}
    finally:
        fb.PROCS.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", default="64,256")
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build/release/relay-server"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        print("no %s: swift build -c release --product relay-server" % args.binary, file=sys.stderr)
        return 2
    rows = [run_size(args.binary, int(m)) for m in args.mib.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| MiB | skopeo copy | relay mirror | ratio | relay start→ready | skopeo peak RSS | relay peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %d | %.2f s | %.2f s | %.2f | %.2f s | %.0f MiB | %.0f MiB |" % (
            r["mib"], r["skopeo_s"], r["relay_mirror_s"] or float("nan"), (r["relay_mirror_s"] or 0) / r["skopeo_s"],
            r["relay_ready_s"], r["skopeo_peak_kib"] / 1024, (r["relay_peak_kib"] or 0) / 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
