"""Pull a Flux artifact from an OCI registry with oras-py (the ORAS project's Python SDK),
as a client nobody on this project wrote.

usage: oras_pull.py HOST:PORT REPO TAG OUTDIR [USER PASSWORD]
Prints JSON: {"manifest": {...}, "manifestDigest": "...", "tags": [...], "files": [paths]}.
"""
import hashlib
import json
import sys

import oras.client


def main() -> int:
    host, repo, tag, outdir = sys.argv[1:5]
    client = oras.client.OrasClient(hostname=host, insecure=True)
    if len(sys.argv) > 6:
        client.login(hostname=host, username=sys.argv[5], password=sys.argv[6], insecure=True)
    target = f"{host}/{repo}:{tag}"
    manifest = client.get_manifest(target)
    files = client.pull(target=target, outdir=outdir)
    tags = client.get_tags(f"{host}/{repo}")
    canonical = json.dumps(manifest, separators=(",", ":"), sort_keys=True)
    print(json.dumps({"manifest": manifest, "tags": tags, "files": files,
                      "canonicalSha256": hashlib.sha256(canonical.encode()).hexdigest()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
