#!/usr/bin/env python3
"""Checks a cosign (v2, tag-mode) signature the way cosign's key verification does, with
tools Relay did not write: skopeo fetches from the registry, `cryptography` verifies.

    verify_signature.py HOST:PORT REPOSITORY TAG PUBLIC_KEY_PEM WORK_DIR

1. `skopeo inspect --raw` of REPOSITORY:TAG; its digest is sha256 of the bytes served.
2. The signature manifest under the tag `sha256-<hex>.sig` (cosign's SignatureTag):
   an OCI image manifest whose single layer has media type
   application/vnd.dev.cosign.simplesigning.v1+json and the annotation
   dev.cosignproject.cosign/signature (base64 DER ECDSA).
3. `skopeo copy` of that tag to `dir:`; the payload blob must hash to the layer digest, and
   its simple-signing JSON must say critical.type = "cosign container image signature" and
   critical.image.docker-manifest-digest = the manifest's digest (cosign's
   SimpleClaimVerifier).
4. The signature verifies over the exact payload bytes with ECDSA P-256 / SHA-256 under one
   of the PEM public keys (a file may hold several; cosign and Flux try each).

Prints one JSON object: {"ok": bool, "errors": [...], "manifestDigest", "signatureTag", "keyIndex"}.
Exit status 0 even when verification fails (the caller reads "ok"); 2 on usage errors.
"""
import base64
import hashlib
import json
import os
import re
import subprocess
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"


def skopeo(*args):
    result = subprocess.run(["skopeo", *args], capture_output=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError("skopeo %s failed: %s" % (" ".join(args), result.stderr.decode(errors="replace").strip()))
    return result.stdout


def public_keys(path):
    text = open(path, encoding="utf-8").read()
    blocks = re.findall(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", text, re.S)
    return [load_pem_public_key(block.encode()) for block in blocks]


def main():
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    registry, repository, tag, key_file, work = sys.argv[1:]
    errors = []
    report = {"ok": False, "errors": errors}
    base = "docker://%s/%s" % (registry, repository)

    served = skopeo("inspect", "--raw", "--tls-verify=false", "%s:%s" % (base, tag))
    digest = "sha256:" + hashlib.sha256(served).hexdigest()
    signature_tag = "sha256-%s.sig" % digest[len("sha256:"):]
    report["manifestDigest"] = digest
    report["signatureTag"] = signature_tag

    raw = skopeo("inspect", "--raw", "--tls-verify=false", "%s:%s" % (base, signature_tag))
    manifest = json.loads(raw)
    if manifest.get("mediaType") != OCI_MANIFEST:
        errors.append("signature manifest mediaType is %r" % manifest.get("mediaType"))
    if manifest.get("config", {}).get("mediaType") != OCI_CONFIG:
        errors.append("signature config mediaType is %r" % manifest.get("config", {}).get("mediaType"))
    layers = manifest.get("layers", [])
    if not layers:
        errors.append("the signature manifest has no layers")
        print(json.dumps(report))
        return
    copied = os.path.join(work, "signature")
    skopeo("copy", "--src-tls-verify=false", "%s:%s" % (base, signature_tag), "dir:" + copied)
    keys = public_keys(key_file)
    # As cosign: every layer is one signature; the image verifies when one of them does.
    report["keyIndex"] = None
    report["layers"] = len(layers)
    candidates = []
    for number, layer in enumerate(layers):
        problems = []
        if layer.get("mediaType") != SIMPLE_SIGNING:
            problems.append("layer mediaType is %r, not %s" % (layer.get("mediaType"), SIMPLE_SIGNING))
        signature_b64 = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        if not signature_b64:
            problems.append("layer has no %s annotation" % SIGNATURE_ANNOTATION)
            candidates.append(problems)
            continue
        payload_digest = layer.get("digest", "")
        payload = open(os.path.join(copied, payload_digest[len("sha256:"):]), "rb").read()
        if "sha256:" + hashlib.sha256(payload).hexdigest() != payload_digest or len(payload) != layer.get("size"):
            problems.append("payload blob does not match its descriptor")
        claim = json.loads(payload)
        critical = claim.get("critical", {})
        if critical.get("type") != PAYLOAD_TYPE:
            problems.append("critical.type is %r" % critical.get("type"))
        if critical.get("image", {}).get("docker-manifest-digest") != digest:
            problems.append("docker-manifest-digest %r is not the served manifest's %s"
                            % (critical.get("image", {}).get("docker-manifest-digest"), digest))
        signature = base64.b64decode(signature_b64, validate=True)
        verified = None
        for index, key in enumerate(keys):
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                continue
            try:
                key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
                verified = index
                break
            except InvalidSignature:
                continue
        if verified is None:
            problems.append("the signature does not verify under any key in %s" % key_file)
        if not problems:
            report["keyIndex"] = verified
            report["layer"] = number
            break
        candidates.append(problems)
    if report["keyIndex"] is None:
        # One layer: its own reasons; several: the first layer's (each was tried).
        errors.extend(candidates[0] if candidates else ["no signature layer"])
    report["ok"] = not errors
    print(json.dumps(report))


if __name__ == "__main__":
    main()
