#!/usr/bin/env python3
"""Helm and OCI test material, written the way the upstream tools lay it out, and a client
that resolves a chart from an OCI registry the way helm-controller does.

  chart OUT.tgz NAME VERSION [--symlink] [--traversal]   a `helm package`-style chart
  index DIR [--wrong-digest VERSION]                      index.yaml for every *.tgz in DIR
  layout DIR TAG --chart TGZ                              an OCI layout holding the chart as `helm push` does
  layout DIR TAG --flux TARGZ --revision R                an OCI layout holding a `flux push artifact`
  sign DIR MANIFEST_DIGEST REFERENCE PUBLIC_OUT           a publisher's cosign signature of it, tag sha256-<hex>.sig
  resolve HOST:PORT REPO RANGE OUTDIR [--user U --password P]
      tags/list (all pages) -> `_` read as `+` -> highest SemVer in RANGE -> HEAD + GET the
      manifest -> GET the config blob -> GET the chart layer -> digests checked -> untarred;
      prints JSON {version, tag, manifestDigest, configMediaType, layerMediaType, files}
Standard library only (plus nothing): the registry client is written against the
distribution spec here, independent of the Swift code under test.
"""
import base64, gzip, hashlib, io, json, os, re, sys, tarfile, time, urllib.request, urllib.error

def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()

def chart(out, name, version, symlink=False, traversal=False):
    files = {
        f"{name}/Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\ndescription: A chart for <tests> & checks\nappVersion: \"{version}\"\nhome: https://example.com/{name}\nsources: [https://example.com/{name}/src]\nmaintainers:\n  - name: relay\n    email: relay@example.com\n".encode(),
        f"{name}/values.yaml": b"replicaCount: 1\n",
        f"{name}/templates/deployment.yaml": f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n".encode(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(f"{name}/templates/secret.yaml")
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, "/etc/shadow", 1700000000
            tar.addfile(info)
        if traversal:
            data = b"owned\n"
            info = tarfile.TarInfo(f"{name}/../../evil.yaml")
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    with open(out, "wb") as f:
        f.write(gzip.compress(raw.getvalue(), mtime=0))

def chart_meta(path):
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name.endswith("/Chart.yaml") and member.name.count("/") == 1:
                text = tar.extractfile(member).read().decode()
                return (re.search(r"^name: (\S+)", text, re.M).group(1), re.search(r"^version: (\S+)", text, re.M).group(1))
    raise SystemExit(f"{path}: no Chart.yaml")

def index(directory, wrong_digest=None):
    entries = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".tgz"):
            continue
        path = os.path.join(directory, name)
        chart_name, version = chart_meta(path)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        if version == wrong_digest:
            digest = hashlib.sha256(b"something else").hexdigest()
        entries.setdefault(chart_name, []).append(
            f"  - apiVersion: v2\n    name: {chart_name}\n    version: {version}\n    created: \"2026-11-0{len(entries.get(chart_name, [])) + 1}T10:00:00.123456789Z\"\n"
            f"    digest: {digest}\n    urls:\n      - {name}\n")
    text = "apiVersion: v1\nentries:\n"
    for chart_name, items in entries.items():
        text += f"  {chart_name}:\n" + "".join(items)
    text += "generated: \"2026-11-20T10:00:00Z\"\n"
    with open(os.path.join(directory, "index.yaml"), "w") as f:
        f.write(text)

def layout(directory, tag, chart_path=None, flux_path=None, revision=None):
    blobs = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    def put(data):
        digest = sha256(data)
        with open(os.path.join(blobs, digest[7:]), "wb") as f:
            f.write(data)
        return {"digest": digest, "size": len(data)}
    if chart_path:
        data = open(chart_path, "rb").read()
        name, version = chart_meta(chart_path)
        config = json.dumps({"name": name, "version": version, "apiVersion": "v2"}, separators=(",", ":")).encode()
        manifest = {"schemaVersion": 2,
                    "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", **put(config)},
                    "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", **put(data)}],
                    "annotations": {"org.opencontainers.image.created": "2026-11-20T10:00:00Z",
                                    "org.opencontainers.image.title": name, "org.opencontainers.image.version": version}}
    else:
        data = open(flux_path, "rb").read()
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.cncf.flux.config.v1+json", **put(b"{}")},
                    "layers": [{"mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip", **put(data)}],
                    "annotations": {"org.opencontainers.image.created": "2026-11-20T10:00:00Z",
                                    "org.opencontainers.image.revision": revision,
                                    "org.opencontainers.image.source": "https://gitlab.example/group/app.git"}}
    body = json.dumps(manifest, separators=(",", ":")).encode()
    descriptor = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(body),
                  "annotations": {"org.opencontainers.image.ref.name": tag}}
    index_path = os.path.join(directory, "index.json")
    existing = json.load(open(index_path)) if os.path.exists(index_path) else {"schemaVersion": 2, "manifests": []}
    existing["manifests"] = [m for m in existing["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag] + [descriptor]
    json.dump(existing, open(index_path, "w"))
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    print(descriptor["digest"])

def sign(directory, manifest_digest, reference, public_out):
    """A publisher's cosign (v2, tag-mode) signature of MANIFEST_DIGEST, as `cosign sign --key`
    stores it: an image under the tag sha256-<hex>.sig with one simple-signing layer. Needs
    `cryptography` (run with the interop venv's python)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    with open(public_out, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    payload = json.dumps({"critical": {"identity": {"docker-reference": reference},
                                       "image": {"docker-manifest-digest": manifest_digest},
                                       "type": "cosign container image signature"}, "optional": None}, separators=(",", ":")).encode()
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    blobs = os.path.join(directory, "blobs", "sha256")
    def put(data):
        digest = sha256(data)
        with open(os.path.join(blobs, digest[7:]), "wb") as f:
            f.write(data)
        return {"digest": digest, "size": len(data)}
    layer = {"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", **put(payload),
             "annotations": {"dev.cosignproject.cosign/signature": signature}}
    config = json.dumps({"architecture": "", "created": "0001-01-01T00:00:00Z", "os": "",
                         "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}, "config": {}}, separators=(",", ":")).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(config)}, "layers": [layer]}
    body = json.dumps(manifest, separators=(",", ":")).encode()
    tag = "sha256-" + manifest_digest[7:] + ".sig"
    index_path = os.path.join(directory, "index.json")
    existing = json.load(open(index_path))
    existing["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(body),
                                  "annotations": {"org.opencontainers.image.ref.name": tag}})
    json.dump(existing, open(index_path, "w"))
    print(tag)

# ---- helm-controller-style resolution -------------------------------------------------------

def parse_version(text):
    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?", text)
    if not m:
        return None
    pre = m.group(4)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre)

def precedence(v):
    # Release above its pre-releases; pre-release identifiers compared as SemVer says.
    pre = v[3]
    if pre is None:
        return (v[0], v[1], v[2], 1, ())
    return (v[0], v[1], v[2], 0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))

def satisfies(v, constraint):
    if v[3] is not None:
        return False  # no pre-releases without a -0 range (not needed here)
    for part in constraint.replace(",", " ").split():
        m = re.fullmatch(r"(>=|<=|>|<|=)?(.+)", part)
        op, bound = m.group(1) or "=", parse_version(m.group(2))
        a, b = precedence(v), precedence(bound)
        if not {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b, "=": a == b}[op]:
            return False
    return True

def request(url, method="GET", auth=None, accept=None):
    req = urllib.request.Request(url, method=method)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, dict((k.lower(), v) for k, v in resp.headers.items()), resp.read()

def resolve(hostport, repo, constraint, outdir, auth=None):
    base = f"http://{hostport}/v2/{repo}"
    tags, url = [], f"{base}/tags/list?n=2"
    while url:  # small pages on purpose: the Link header must be followed
        _, headers, body = request(url, auth=auth)
        tags += json.loads(body).get("tags") or []
        link = headers.get("link")
        url = None
        if link and 'rel="next"' in link:
            url = f"http://{hostport}" + link[link.index("<") + 1:link.index(">")]
    candidates = [(precedence(parse_version(t.replace("_", "+"))), t) for t in tags if parse_version(t.replace("_", "+"))]
    candidates = [(p, t) for p, t in candidates if satisfies(parse_version(t.replace("_", "+")), constraint)]
    if not candidates:
        raise SystemExit(f"no tag of {repo} in {constraint}: {tags}")
    tag = max(candidates)[1]
    accept = "application/vnd.oci.image.manifest.v1+json"
    status, head, _ = request(f"{base}/manifests/{tag}", method="HEAD", auth=auth, accept=accept)
    digest = head["docker-content-digest"]
    _, headers, body = request(f"{base}/manifests/{digest}", auth=auth, accept=accept)
    assert sha256(body) == digest, "manifest digest"
    manifest = json.loads(body)
    config = manifest["config"]
    _, _, config_body = request(f"{base}/blobs/{config['digest']}", auth=auth)
    assert sha256(config_body) == config["digest"] and len(config_body) == config["size"], "config digest"
    meta = json.loads(config_body)
    layer = next(l for l in manifest["layers"] if l["mediaType"] == "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
    _, _, chart_body = request(f"{base}/blobs/{layer['digest']}", auth=auth)
    assert sha256(chart_body) == layer["digest"] and len(chart_body) == layer["size"], "layer digest"
    os.makedirs(outdir, exist_ok=True)
    files = []
    with tarfile.open(fileobj=io.BytesIO(chart_body), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name.startswith("/") or ".." in member.name.split("/"):
                raise SystemExit(f"unsafe member {member.name}")
            target = os.path.join(outdir, member.name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(tar.extractfile(member).read())
            files.append(member.name)
    print(json.dumps({"tag": tag, "version": tag.replace("_", "+"), "manifestDigest": digest,
                      "contentType": headers.get("content-type"), "configMediaType": config["mediaType"],
                      "configName": meta.get("name"), "configVersion": meta.get("version"),
                      "layerMediaType": layer["mediaType"], "layerDigest": layer["digest"], "files": sorted(files)}))

def main(argv):
    command, args = argv[1], argv[2:]
    def option(name, default=None):
        return args[args.index(name) + 1] if name in args else default
    if command == "chart":
        chart(args[0], args[1], args[2], symlink="--symlink" in args, traversal="--traversal" in args)
    elif command == "index":
        index(args[0], wrong_digest=option("--wrong-digest"))
    elif command == "layout":
        layout(args[0], args[1], chart_path=option("--chart"), flux_path=option("--flux"), revision=option("--revision"))
    elif command == "sign":
        sign(args[0], args[1], args[2], args[3])
    elif command == "resolve":
        user, password = option("--user"), option("--password")
        resolve(args[0], args[1], args[2], args[3], auth=f"{user}:{password}" if user else None)
    else:
        raise SystemExit(__doc__)

if __name__ == "__main__":
    main(sys.argv)
