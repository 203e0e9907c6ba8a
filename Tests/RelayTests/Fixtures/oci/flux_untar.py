"""Unpack a Flux artifact by the rules of fluxcd/pkg tar.Untar (spec section 3.2) and report
the resulting file set.

usage: flux_untar.py ARTIFACT.tar.gz DEST
Rules applied: the body must be gzip; names must be non-empty, relative, without '\\' and
without '../'; regular files and directories are written, symlinks skipped, any other type is
an error; a file's written length must equal its header size.
Prints JSON: {"files": {"path": "<git blob sha1>"}, "dirs": [...], "skippedSymlinks": [...],
"errors": [...]}.
"""
import gzip
import hashlib
import json
import os
import sys
import tarfile


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def main() -> int:
    src, dest = sys.argv[1], sys.argv[2]
    report = {"files": {}, "dirs": [], "skippedSymlinks": [], "errors": []}
    with open(src, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            report["errors"].append("requires gzip-compressed body")
            print(json.dumps(report))
            return 1
    with gzip.open(src, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
        for member in tar:
            name = member.name
            if not name or "\\" in name or name.startswith("/") or "../" in name:
                report["errors"].append(f"invalid name {name!r}")
                continue
            target = os.path.join(dest, name)
            if member.isdir():
                os.makedirs(target, mode=0o750 | (member.mode & 0o777) | 0o700, exist_ok=True)
                report["dirs"].append(os.path.normpath(name))
            elif member.isreg():
                os.makedirs(os.path.dirname(target) or dest, mode=0o750, exist_ok=True)
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    report["errors"].append(f"short file {name}")
                with open(target, "wb") as out:
                    out.write(data)
                os.chmod(target, member.mode & 0o777)
                report["files"][os.path.normpath(name)] = blob_id(data)
            elif member.issym():
                report["skippedSymlinks"].append(name)
            else:
                report["errors"].append(f"unsupported file type for {name}")
    print(json.dumps(report, sort_keys=True))
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
