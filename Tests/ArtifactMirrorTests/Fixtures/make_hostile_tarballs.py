#!/usr/bin/env python3
"""Writes tarballs that break Flux's unpack rules (and one good one) into a directory.

Usage: make_hostile_tarballs.py OUTDIR
Each file is named after the rule it breaks; the verifier test expects each verdict.
"""
import gzip
import io
import os
import sys
import tarfile


def add_file(tar, name, data=b"x: 1\n", mode=0o600):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def add_special(tar, name, kind, **fields):
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info)


def write(outdir, name, build, fmt=tarfile.PAX_FORMAT, pax_headers=None):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, pax_headers=pax_headers or {}) as tar:
        build(tar)
    with open(os.path.join(outdir, name), "wb") as out:
        out.write(gzip.compress(buffer.getvalue(), mtime=0))
    return buffer.getvalue()


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    good = write(outdir, "good.tar.gz", lambda t: (add_special(t, ".", tarfile.DIRTYPE, mode=0o750),
                                                   add_file(t, "a.yaml")))
    write(outdir, "symlink.tar.gz", lambda t: (add_file(t, "a.yaml"),
                                               add_special(t, "link.yaml", tarfile.SYMTYPE, linkname="a.yaml")))
    write(outdir, "hardlink.tar.gz", lambda t: (add_file(t, "a.yaml"),
                                                add_special(t, "hard.yaml", tarfile.LNKTYPE, linkname="a.yaml")))
    write(outdir, "dotdot.tar.gz", lambda t: add_file(t, "sub/../../escape.yaml"))
    write(outdir, "absolute.tar.gz", lambda t: add_file(t, "/etc/evil.yaml"))
    write(outdir, "backslash.tar.gz", lambda t: add_file(t, "dir\\evil.yaml"))
    write(outdir, "device.tar.gz", lambda t: add_special(t, "dev", tarfile.CHRTYPE, devmajor=1, devminor=3))
    write(outdir, "fifo.tar.gz", lambda t: add_special(t, "pipe", tarfile.FIFOTYPE))
    write(outdir, "global-header.tar.gz", lambda t: add_file(t, "a.yaml"), pax_headers={"comment": "global"})
    write(outdir, "unreadable-mode.tar.gz", lambda t: add_file(t, "a.yaml", mode=0o000))
    write(outdir, "too-big.tar.gz", lambda t: add_file(t, "big.bin", b"\0" * 2048))
    # Truncated: the tar stream stops inside the file data (valid gzip of a short tar).
    with open(os.path.join(outdir, "truncated-tar.tar.gz"), "wb") as out:
        out.write(gzip.compress(good[:512 * 2 + 100], mtime=0))
    # Truncated gzip: the compressed file is cut short.
    compressed = open(os.path.join(outdir, "good.tar.gz"), "rb").read()
    with open(os.path.join(outdir, "truncated-gzip.tar.gz"), "wb") as out:
        out.write(compressed[: len(compressed) // 2])
    # Not gzip: a plain tar.
    with open(os.path.join(outdir, "not-gzip.tar.gz"), "wb") as out:
        out.write(good)


if __name__ == "__main__":
    main(sys.argv[1])
