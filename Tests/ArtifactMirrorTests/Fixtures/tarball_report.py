#!/usr/bin/env python3
"""Independent reader of a .tar.gz artifact, for cross-checking artifact-mirror.

Usage:
    python3 tarball_report.py ARTIFACT.tar.gz     print a JSON report on stdout
    python3 tarball_report.py --self-check        check this reader against GNU tar
                                                  and Python tarfile (run by hand)

Stdlib only (Python >= 3.9). It never shells out to tar to read an archive;
the archive is read three independent ways, all streaming (constant memory):

  1. zlib, member by member: gzip header bytes, number of gzip members, CRC-32
     and ISIZE of every member, total uncompressed size;
  2. its own block-by-block parser of the decompressed stream (via gzip.open):
     every 512-byte header block with its raw fields and recomputed checksum,
     PAX records, GNU long names, trailing zero blocks;
  3. Python's tarfile (stream mode, via gzip): the member list, with git blob
     ids and SHA-256 of file contents.

Parsers 2 and 3 must agree on which headers are members, else the archive is
reported as malformed.

Report keys:
  gzip_header_hex          first 10 bytes of the file, hex
  gzip_members             number of gzip members
  gzip_trailing_zero_bytes NUL padding after the last gzip member (normally 0)
  entries                  members in archive order: name (as tarfile gives it:
                           directory names lose their trailing "/"), stored_path
                           (the path exactly as stored: PAX path, GNU long name or
                           ustar prefix + "/" + name), type ("file", "dir",
                           "symlink", "hardlink" or "other:<typeflag>"), mode
                           (permission bits, int), uid, gid, uname, gname, mtime,
                           size, linkname, pax_headers (PAX records in effect for
                           this member, global ones included), ustar_prefix_used,
                           header_offset (offset of the member's own ustar header
                           in the uncompressed stream); for files also git_blob_id
                           (sha1 of b"blob <size>\\0" + content) and sha256
  raw_headers              every header block, PAX "x"/"g" and GNU "L"/"K" ones
                           included: offset, the raw fields as strings (NUL shown
                           as "\\0"; name/linkname/uname/gname/prefix decoded up
                           to the first NUL), checksum_ok, checksum_computed,
                           size (parsed), pax_records (for x/g), gnu_long_value
                           (for L/K)
  trailing_zero_blocks     all-zero 512-byte blocks after the last member
  total_uncompressed_size  bytes of the decompressed stream
  problems                 list of non-fatal defects (bad checksum, fewer than two
                           end-of-archive blocks, data after the end-of-archive
                           marker, parser disagreement, ...)

Exit status: 0 = report printed, no problems. 2 = not gzip / corrupt gzip /
truncated or unparseable tar (message on stderr, nothing on stdout), or the
report was printed but "problems" is non-empty (each problem also on stderr).
1 = usage error.

Text that is not valid UTF-8 is shown with \\xNN escapes.
"""

import gzip
import hashlib
import json
import os
import sys
import tarfile
import zlib

BLOCK = 512
CHUNK = 1 << 20
ZERO_BLOCK = bytes(BLOCK)

# typeflags after which no data blocks follow (as in tarfile: everything that
# is not a regular file and is a known type).
NO_DATA_TYPES = {b"1", b"2", b"3", b"4", b"5", b"6"}


class Malformed(Exception):
    """Fatal: no report can be produced."""


# ----------------------------------------------------------------- text helpers

def clean_text(s):
    """A str that may hold surrogateescape'd bytes -> valid Unicode text."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def raw_field(b):
    """Whole raw field, NULs shown as the two characters backslash-zero."""
    return b.decode("utf-8", "backslashreplace").replace("\x00", "\\0")


def str_field(b):
    """A string field decoded up to the first NUL."""
    return b.split(b"\x00", 1)[0].decode("utf-8", "backslashreplace")


def parse_number(field):
    """Numeric header field: octal (NUL/space terminated) or GNU base-256."""
    if field and field[0] in (0x80, 0xFF):
        n = 0
        for byte in field[1:]:
            n = (n << 8) | byte
        if field[0] == 0xFF:
            n -= 256 ** (len(field) - 1)
        return n
    s = field.split(b"\x00", 1)[0].strip(b" ")
    if not s:
        return 0
    try:
        return int(s.decode("ascii"), 8)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not an octal number: %r" % field)


# ------------------------------------------------------------------ gzip layer

def read_gzip_layer(path):
    """Pass 1: gzip members, checked with zlib (CRC-32 and ISIZE verified)."""
    with open(path, "rb") as f:
        head = f.read(10)
        if len(head) < 2 or head[:2] != b"\x1f\x8b":
            raise Malformed("not a gzip file (magic is %s, want 1f8b)" % head[:2].hex())
        f.seek(0)
        members = 0
        total = 0
        trailing_zero = 0
        pending = b""
        d = None
        eof = False
        while True:
            if d is None:
                # Between members: need the magic of the next one, or the end.
                while len(pending) < 2 and not eof:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        eof = True
                    pending += chunk
                if not pending:
                    break
                if pending[:2] == b"\x1f\x8b":
                    d = zlib.decompressobj(wbits=31)
                    members += 1
                elif pending.strip(b"\x00") == b"" and members > 0:
                    # NUL padding (tolerated by gzip(1) and Python's gzip);
                    # it must run to the end of the file.
                    trailing_zero += len(pending)
                    pending = b""
                    while True:
                        chunk = f.read(CHUNK)
                        if not chunk:
                            break
                        if chunk.strip(b"\x00"):
                            raise Malformed("garbage after gzip member %d" % members)
                        trailing_zero += len(chunk)
                    break
                else:
                    raise Malformed("garbage after gzip member %d (bytes %s)"
                                    % (members, pending[:8].hex()))
            data = pending if pending else f.read(CHUNK)
            pending = b""
            if not data:
                raise Malformed("gzip member %d is truncated" % members)
            try:
                out = d.decompress(data)
            except zlib.error as e:
                raise Malformed("gzip member %d is corrupt: %s" % (members, e))
            total += len(out)
            if d.eof:
                pending = d.unused_data
                d = None
        return {
            "gzip_header_hex": head.hex(),
            "gzip_members": members,
            "gzip_trailing_zero_bytes": trailing_zero,
            "total_uncompressed_size": total,
        }


def read_exact(f, n):
    try:
        buf = f.read(n)
    except (OSError, EOFError, zlib.error) as e:
        raise Malformed("cannot decompress: %s" % e)
    return buf


# ---------------------------------------------------- raw block-by-block parser

def parse_pax_records(buf, where):
    records = []
    pos = 0
    # The data area is zero-padded to a block; records stop at the padding.
    while pos < len(buf) and buf[pos] != 0:
        sp = buf.find(b" ", pos)
        if sp < 0:
            raise Malformed("PAX header at %d: record without length" % where)
        try:
            length = int(buf[pos:sp].decode("ascii"))
        except ValueError:
            raise Malformed("PAX header at %d: bad record length %r" % (where, buf[pos:sp]))
        rec = buf[pos:pos + length]
        if length <= 0 or len(rec) != length or not rec.endswith(b"\n") or b"=" not in rec[sp - pos:]:
            raise Malformed("PAX header at %d: malformed record %r" % (where, rec[:80]))
        key, _, value = rec[sp - pos + 1:-1].partition(b"=")
        records.append((key.decode("utf-8", "backslashreplace"),
                        value.decode("utf-8", "backslashreplace")))
        pos += length
    return records


def raw_scan(path, problems):
    """Pass 2: every header block, parsed by hand."""
    headers = []
    member_headers = []   # (offset, header dict) of headers that are members
    offset = 0
    end_marker = None     # offset of the first all-zero header block
    zero_run = 0
    global_pax = {}
    pending_pax = {}
    pending_long = {}
    with gzip.open(path, "rb") as f:
        while True:
            blk = read_exact(f, BLOCK)
            if not blk:
                break
            if len(blk) < BLOCK:
                raise Malformed("uncompressed stream ends with a partial block "
                                "(%d bytes at offset %d)" % (len(blk), offset))
            if blk == ZERO_BLOCK:
                if end_marker is None:
                    end_marker = offset
                zero_run += 1
                offset += BLOCK
                continue
            if end_marker is not None:
                problems.append("non-zero block at offset %d after the end-of-archive "
                                "marker at offset %d" % (offset, end_marker))
                # Keep reading it as a header (like tar --ignore-zeros) so the
                # report shows what is there.
                end_marker = None
            zero_run = 0

            chk_stored = blk[148:156]
            computed = sum(blk[:148]) + 8 * 0x20 + sum(blk[156:])
            try:
                chk_value = parse_number(chk_stored)
            except ValueError:
                chk_value = None
            ok = chk_value == computed
            typeflag = blk[156:157]
            magic = blk[257:263]
            h = {
                "offset": offset,
                "name_field": str_field(blk[0:100]),
                "typeflag": raw_field(typeflag),
                "mode_field": raw_field(blk[100:108]),
                "uid_field": raw_field(blk[108:116]),
                "gid_field": raw_field(blk[116:124]),
                "size_field": raw_field(blk[124:136]),
                "mtime_field": raw_field(blk[136:148]),
                "chksum_field": raw_field(chk_stored),
                "linkname_field": str_field(blk[157:257]),
                "magic": raw_field(magic),
                "version": raw_field(blk[263:265]),
                "uname_field": str_field(blk[265:297]),
                "gname_field": str_field(blk[297:329]),
                "devmajor_field": raw_field(blk[329:337]),
                "devminor_field": raw_field(blk[337:345]),
                "prefix_field": str_field(blk[345:500]),
                "checksum_ok": ok,
                "checksum_computed": computed,
            }
            if not ok:
                computed_signed = (sum(b - 256 if b > 127 else b for b in blk[:148]) + 8 * 0x20
                                   + sum(b - 256 if b > 127 else b for b in blk[156:]))
                if chk_value is not None and chk_value == computed_signed:
                    why = "signed-byte checksum (non-standard)"
                else:
                    why = "stored %r, computed %d" % (h["chksum_field"], computed)
                problems.append("bad header checksum at offset %d: %s" % (offset, why))
            try:
                size = parse_number(blk[124:136])
            except ValueError:
                raise Malformed("header at offset %d: unparseable size field %r"
                                % (offset, blk[124:136]))
            if typeflag not in (b"x", b"g", b"X") and "size" in pending_pax:
                try:
                    size = int(pending_pax["size"])
                except ValueError:
                    raise Malformed("bad PAX size record before offset %d" % offset)
            if size < 0:
                raise Malformed("header at offset %d: negative size" % offset)
            h["size"] = size
            headers.append(h)
            offset += BLOCK

            # GNU old-style sparse: extension blocks follow the header.
            if typeflag == b"S":
                ext = blk[482]
                while ext:
                    eb = read_exact(f, BLOCK)
                    if len(eb) < BLOCK:
                        raise Malformed("truncated GNU sparse extension at %d" % offset)
                    offset += BLOCK
                    ext = eb[504]

            has_data = typeflag not in NO_DATA_TYPES
            nblocks = (size + BLOCK - 1) // BLOCK if has_data else 0
            data = b""
            if typeflag in (b"x", b"g", b"X", b"L", b"K"):
                data = read_exact(f, nblocks * BLOCK)
                if len(data) < nblocks * BLOCK:
                    raise Malformed("archive truncated in the data of the header at %d"
                                    % h["offset"])
                data = data[:size]
                offset += nblocks * BLOCK
                if typeflag in (b"x", b"g", b"X"):
                    recs = parse_pax_records(data, h["offset"])
                    h["pax_records"] = dict(recs)
                    if typeflag == b"g":
                        global_pax.update(h["pax_records"])
                    else:
                        pending_pax.update(h["pax_records"])
                else:
                    value = str_field(data)
                    h["gnu_long_value"] = value
                    pending_long[typeflag] = value
                continue
            remaining = nblocks * BLOCK
            while remaining:
                got = read_exact(f, min(remaining, CHUNK))
                if not got:
                    raise Malformed("archive truncated in the data of %r (header at %d)"
                                    % (h["name_field"], h["offset"]))
                remaining -= len(got)
            offset += nblocks * BLOCK

            # A member header: work out the path as stored.
            ustar = magic == b"ustar\x00"
            prefix_used = ustar and blk[345] != 0
            eff = dict(global_pax)
            eff.update(pending_pax)
            if "path" in eff:
                stored = eff["path"]
            elif b"L" in pending_long:
                stored = pending_long[b"L"]
            elif prefix_used:
                stored = h["prefix_field"] + "/" + h["name_field"]
            else:
                stored = h["name_field"]
            if "linkpath" in eff:
                link = eff["linkpath"]
            elif b"K" in pending_long:
                link = pending_long[b"K"]
            else:
                link = h["linkname_field"]
            member_headers.append({"offset": h["offset"], "stored_path": stored,
                                   "linkname": link, "ustar_prefix_used": prefix_used})
            pending_pax = {}
            pending_long = {}

    if end_marker is None:
        problems.append("no end-of-archive marker (no all-zero block after the last member)")
    elif zero_run < 2:
        problems.append("only %d all-zero block(s) at the end; POSIX wants at least 2" % zero_run)
    if pending_pax or pending_long:
        problems.append("extended header(s) at the end not followed by a member")
    return headers, member_headers, zero_run, offset


# ------------------------------------------------------------- tarfile reading

def type_name(ti):
    t = ti.type
    if t in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return "file"
    if t == tarfile.DIRTYPE:
        return "dir"
    if t == tarfile.SYMTYPE:
        return "symlink"
    if t == tarfile.LNKTYPE:
        return "hardlink"
    return "other:" + t.decode("latin-1").replace("\x00", "\\0")


def tarfile_entries(path):
    """Pass 3: members as Python's tarfile sees them."""
    entries = []
    try:
        with tarfile.open(path, mode="r|gz", encoding="utf-8",
                          errors="surrogateescape") as tf:
            for ti in tf:
                mtime = ti.mtime
                if isinstance(mtime, float) and mtime.is_integer():
                    mtime = int(mtime)
                e = {
                    "name": clean_text(ti.name),
                    "type": type_name(ti),
                    "mode": ti.mode & 0o7777,
                    "uid": ti.uid,
                    "gid": ti.gid,
                    "uname": clean_text(ti.uname),
                    "gname": clean_text(ti.gname),
                    "mtime": mtime,
                    "size": ti.size,
                    "linkname": clean_text(ti.linkname),
                    "pax_headers": {clean_text(k): clean_text(v)
                                    for k, v in ti.pax_headers.items()},
                    "_data_offset": ti.offset_data,
                }
                if e["type"] == "file":
                    blob = hashlib.sha1(b"blob %d\x00" % ti.size)
                    sha = hashlib.sha256()
                    n = 0
                    fo = tf.extractfile(ti)
                    while True:
                        chunk = fo.read(CHUNK)
                        if not chunk:
                            break
                        blob.update(chunk)
                        sha.update(chunk)
                        n += len(chunk)
                    if n != ti.size:
                        raise Malformed("%r: read %d bytes, header says %d" % (ti.name, n, ti.size))
                    e["git_blob_id"] = blob.hexdigest()
                    e["sha256"] = sha.hexdigest()
                entries.append(e)
    except tarfile.TarError as e:
        raise Malformed("tarfile: %s" % e)
    except (OSError, EOFError, zlib.error) as e:
        raise Malformed("cannot read archive: %s" % e)
    return entries


# ---------------------------------------------------------------------- report

def report(path):
    problems = []
    out = read_gzip_layer(path)
    headers, members, zero_blocks, scanned = raw_scan(path, problems)
    if scanned != out["total_uncompressed_size"]:
        raise Malformed("internal: scanned %d bytes, zlib gave %d"
                        % (scanned, out["total_uncompressed_size"]))
    entries = tarfile_entries(path)

    by_header = {m["offset"]: m for m in members}
    for e in entries:
        hdr_off = e.pop("_data_offset") - BLOCK
        m = by_header.pop(hdr_off, None)
        if m is None:
            problems.append("tarfile member %r has no matching header at offset %d"
                            % (e["name"], hdr_off))
            e.update(stored_path=None, ustar_prefix_used=None, header_offset=hdr_off)
            continue
        e["stored_path"] = m["stored_path"]
        e["ustar_prefix_used"] = m["ustar_prefix_used"]
        e["header_offset"] = hdr_off
        if m["linkname"] != e["linkname"]:
            problems.append("%r: linkname %r (raw) vs %r (tarfile)"
                            % (e["name"], m["linkname"], e["linkname"]))
    if by_header:
        problems.append("tarfile did not return the member(s) with header at offset(s) %s "
                        "(it stops at the first bad header)"
                        % ", ".join(str(o) for o in sorted(by_header)))

    # Key order as documented.
    keys = ["name", "stored_path", "type", "mode", "uid", "gid", "uname", "gname",
            "mtime", "size", "linkname", "pax_headers", "ustar_prefix_used",
            "header_offset", "git_blob_id", "sha256"]
    entries = [{k: e[k] for k in keys if k in e} for e in entries]
    return {
        "gzip_header_hex": out["gzip_header_hex"],
        "gzip_members": out["gzip_members"],
        "gzip_trailing_zero_bytes": out["gzip_trailing_zero_bytes"],
        "entries": entries,
        "raw_headers": headers,
        "trailing_zero_blocks": zero_blocks,
        "total_uncompressed_size": out["total_uncompressed_size"],
        "problems": problems,
    }


def main(argv):
    if len(argv) == 2 and argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if len(argv) == 2 and argv[1] == "--self-check":
        return self_check()
    if len(argv) != 2 or argv[1].startswith("-"):
        sys.stderr.write("usage: %s ARTIFACT.tar.gz | --self-check | --help\n" % argv[0])
        return 1
    path = argv[1]
    try:
        rep = report(path)
    except Malformed as e:
        sys.stderr.write("%s: %s\n" % (path, e))
        return 2
    except OSError as e:
        sys.stderr.write("%s: %s\n" % (path, e))
        return 2
    sys.stdout.write(json.dumps(rep, indent=2, ensure_ascii=False) + "\n")
    for p in rep["problems"]:
        sys.stderr.write("%s: %s\n" % (path, p))
    return 2 if rep["problems"] else 0


# ------------------------------------------------------------------ self-check
# Run by hand:  python3 tarball_report.py --self-check
# Needs GNU tar, gzip and git on PATH (used only to *make* archives here).

def self_check():
    import io
    import shutil
    import stat
    import subprocess
    import tempfile

    me = os.path.abspath(__file__)
    failures = []
    checks = [0]

    def check(cond, what):
        checks[0] += 1
        if not cond:
            failures.append(what)
            print("  FAIL", what)

    def run_report(path, want_rc=0):
        p = subprocess.run([sys.executable, me, path], capture_output=True, text=True)
        check(p.returncode == want_rc, "%s: exit %d, want %d (stderr: %s)"
              % (os.path.basename(path), p.returncode, want_rc, p.stderr.strip()[:300]))
        return json.loads(p.stdout) if p.stdout else None, p

    def blob_id(data):
        return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()

    tar = shutil.which("tar")
    gnu = False
    if tar:
        v = subprocess.run([tar, "--version"], capture_output=True, text=True).stdout
        gnu = "GNU tar" in v
    if not gnu:
        print("GNU tar not found; the GNU tar cases are skipped")

    with tempfile.TemporaryDirectory(prefix="tarball-report-check-") as tmp:
        src = os.path.join(tmp, "src")
        long_dir = "deeply/" + "/".join("segment%02d" % i for i in range(9))   # ~96 bytes
        long_name = long_dir + "/" + "a-file-name-that-pushes-the-path-past-100.yaml"
        very_long = "v/" + "x" * 200 + ".yaml"           # does not fit ustar at all
        uni = "données/ü-ñ-✓.yaml"
        files = {
            "README.md": b"# hello\n",
            "run.sh": b"#!/bin/sh\necho hi\n",
            "empty.txt": b"",
            "big.bin": bytes(range(256)) * 40 + b"tail",     # not block aligned
            long_name: b"long: true\n",
            uni: "clé: valeur ✓\n".encode(),
        }
        for rel, data in files.items():
            p = os.path.join(src, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        os.chmod(os.path.join(src, "run.sh"), 0o755)
        os.chmod(os.path.join(src, "README.md"), 0o644)
        os.symlink("README.md", os.path.join(src, "link-to-readme"))
        fixed_mtime = 1600000000
        for root, dirs, fns in os.walk(src):
            for n in fns + dirs:
                os.utime(os.path.join(root, n), (fixed_mtime, fixed_mtime), follow_symlinks=False)
        os.utime(src, (fixed_mtime, fixed_mtime))
        regular = sorted(files)

        def common_checks(label, rep, expect_prefix_for_long):
            ents = {e["name"]: e for e in rep["entries"]}
            for rel in regular:
                e = ents.get(rel)
                check(e is not None, "%s: %r missing (have %s)" % (label, rel, sorted(ents)[:20]))
                if e is None:
                    continue
                data = files[rel]
                st = os.stat(os.path.join(src, rel))
                check(e["type"] == "file", "%s: %r type %s" % (label, rel, e["type"]))
                check(e["size"] == len(data), "%s: %r size" % (label, rel))
                check(e["git_blob_id"] == blob_id(data), "%s: %r blob id" % (label, rel))
                check(e["sha256"] == hashlib.sha256(data).hexdigest(), "%s: %r sha256" % (label, rel))
                check(e["mode"] == stat.S_IMODE(st.st_mode), "%s: %r mode %o vs %o"
                      % (label, rel, e["mode"], stat.S_IMODE(st.st_mode)))
                check(e["mtime"] == fixed_mtime, "%s: %r mtime %r" % (label, rel, e["mtime"]))
            check(ents.get("run.sh", {}).get("mode") == 0o755, "%s: run.sh not 0755" % label)
            ln = ents.get("link-to-readme")
            check(ln is not None and ln["type"] == "symlink" and ln["linkname"] == "README.md",
                  "%s: symlink %r" % (label, ln))
            e = ents.get(long_name)
            if e and expect_prefix_for_long is not None:
                check(e["ustar_prefix_used"] == expect_prefix_for_long,
                      "%s: long name prefix_used=%r" % (label, e["ustar_prefix_used"]))
            check(all(h["checksum_ok"] for h in rep["raw_headers"]), "%s: checksum" % label)
            check(rep["trailing_zero_blocks"] >= 2, "%s: trailing zero blocks" % label)
            check(rep["total_uncompressed_size"] % BLOCK == 0, "%s: size multiple of 512" % label)
            check(rep["gzip_header_hex"].startswith("1f8b08"), "%s: gzip header" % label)
            check(rep["gzip_members"] == 1, "%s: one gzip member" % label)
            return ents

        if gnu:
            base = [tar, "-C", src, "--owner=1234", "--group=5678", "--numeric-owner",
                    "--sort=name"]
            # GNU tar ustar
            print("GNU tar --format=ustar")
            arc = os.path.join(tmp, "gnu-ustar.tar.gz")
            subprocess.run(base + ["--format=ustar", "-czf", arc, "."], check=True)
            rep, _ = run_report(arc)
            # GNU tar stores "./x": compare without the "./"
            for e in rep["entries"]:
                e["name"] = e["name"][2:] if e["name"].startswith("./") else e["name"]
            ents = common_checks("gnu-ustar", rep, True)
            for e in rep["entries"]:
                check(e["uid"] == 1234 and e["gid"] == 5678, "gnu-ustar: uid/gid %r" % e["name"])
                check(e["pax_headers"] == {}, "gnu-ustar: unexpected pax %r" % e["pax_headers"])
            check(all(h["magic"] == "ustar\\0" and h["version"] == "00"
                      for h in rep["raw_headers"]), "gnu-ustar: magic/version")
            h = [h for h in rep["raw_headers"] if h["name_field"].endswith("past-100.yaml")]
            check(len(h) == 1 and h[0]["prefix_field"] == "./" + long_dir,
                  "gnu-ustar: prefix field %r" % h)
            check(ents.get(uni, {}).get("stored_path") == "./" + uni, "gnu-ustar: utf-8 name")
            # Cross-check the raw octal fields against what tarfile parsed.
            for hh in rep["raw_headers"]:
                m = [e for e in rep["entries"] if e["header_offset"] == hh["offset"]]
                if m:
                    check(int(hh["mode_field"].replace("\\0", ""), 8) & 0o7777 == m[0]["mode"],
                          "gnu-ustar: mode field %r" % hh["mode_field"])
                    check(int(hh["mtime_field"].replace("\\0", ""), 8) == m[0]["mtime"],
                          "gnu-ustar: mtime field")
            # A name that cannot be split must be refused by ustar: skip.

            # GNU tar pax, with a name that does not fit ustar
            print("GNU tar --format=pax")
            p = os.path.join(src, very_long)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(b"very: long\n")
            os.utime(p, (fixed_mtime, fixed_mtime))
            arc = os.path.join(tmp, "gnu-pax.tar.gz")
            subprocess.run(base + ["--format=pax", "--pax-option=delete=atime,delete=ctime",
                                   "-czf", arc, "."], check=True)
            rep, _ = run_report(arc)
            for e in rep["entries"]:
                e["name"] = e["name"][2:] if e["name"].startswith("./") else e["name"]
            ents = common_checks("gnu-pax", rep, None)
            e = ents.get(very_long)
            check(e is not None and e["pax_headers"].get("path") == "./" + very_long,
                  "gnu-pax: long path via PAX %r" % (e and e["pax_headers"]))
            check(ents.get(uni, {}).get("pax_headers", {}).get("path") == "./" + uni,
                  "gnu-pax: non-ASCII path via PAX")
            xs = [h for h in rep["raw_headers"] if h["typeflag"] == "x"]
            check(len(xs) >= 2 and all("pax_records" in h for h in xs), "gnu-pax: x headers")
            check(ents.get("README.md", {}).get("pax_headers") == {}, "gnu-pax: README pax")
            os.remove(p)
            shutil.rmtree(os.path.join(src, "v"))

            # GNU tar default format (gnu): ././@LongLink "L" headers
            print("GNU tar --format=gnu")
            arc = os.path.join(tmp, "gnu-gnu.tar.gz")
            subprocess.run(base + ["--format=gnu", "-czf", arc, "."], check=True)
            rep, _ = run_report(arc)
            for e in rep["entries"]:
                e["name"] = e["name"][2:] if e["name"].startswith("./") else e["name"]
            common_checks("gnu-gnu", rep, False)
            check(any(h["typeflag"] == "L" for h in rep["raw_headers"]), "gnu-gnu: L header")

        # Python tarfile, all three formats, deterministic headers
        for fmt_name, fmt in (("ustar", tarfile.USTAR_FORMAT), ("gnu", tarfile.GNU_FORMAT),
                              ("pax", tarfile.PAX_FORMAT)):
            print("python tarfile", fmt_name)
            arc = os.path.join(tmp, "py-%s.tar.gz" % fmt_name)
            with tarfile.open(arc, "w:gz", format=fmt, encoding="utf-8") as tf:
                def filt(ti):
                    ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, "root", "root"
                    ti.mtime = int(ti.mtime)   # a float mtime becomes a PAX record
                    return ti
                for rel in regular + ["link-to-readme"]:
                    tf.add(os.path.join(src, rel), arcname=rel, recursive=False, filter=filt)
            rep, _ = run_report(arc)
            ents = common_checks("py-" + fmt_name, rep,
                                 True if fmt == tarfile.USTAR_FORMAT else None)
            check([e["name"] for e in rep["entries"]] == regular + ["link-to-readme"],
                  "py-%s: archive order" % fmt_name)
            for e in rep["entries"]:
                check(e["uname"] == "root" and e["uid"] == 0, "py-%s: owner" % fmt_name)
            if fmt == tarfile.PAX_FORMAT:
                check(ents[uni]["pax_headers"] == {"path": uni}, "py-pax: pax path %r"
                      % ents[uni]["pax_headers"])
                check(ents["README.md"]["pax_headers"] == {}, "py-pax: README pax")

        # Directory entry with trailing slash, hardlink, fifo, PAX global header.
        print("python tarfile: dir, hardlink, fifo, global header")
        arc = os.path.join(tmp, "py-misc.tar.gz")
        with tarfile.open(arc, "w:gz", format=tarfile.PAX_FORMAT,
                          pax_headers={"comment": "global-1"}) as tf:
            d = tarfile.TarInfo("dir/"); d.type = tarfile.DIRTYPE; d.mode = 0o755
            tf.addfile(d)
            f = tarfile.TarInfo("dir/f"); f.size = 3; f.mode = 0o600; f.mtime = 5
            tf.addfile(f, io.BytesIO(b"abc"))
            hl = tarfile.TarInfo("dir/hl"); hl.type = tarfile.LNKTYPE; hl.linkname = "dir/f"
            tf.addfile(hl)
            ff = tarfile.TarInfo("fifo"); ff.type = tarfile.FIFOTYPE
            tf.addfile(ff)
        rep, _ = run_report(arc)
        types = [(e["name"], e["type"]) for e in rep["entries"]]
        check(types == [("dir", "dir"), ("dir/f", "file"), ("dir/hl", "hardlink"),
                        ("fifo", "other:6")], "py-misc: types %r" % types)
        check(rep["entries"][0]["stored_path"] == "dir/", "py-misc: stored dir path")
        check(rep["entries"][1]["git_blob_id"] == blob_id(b"abc"), "py-misc: blob id")
        check(rep["entries"][1]["mode"] == 0o600 and rep["entries"][1]["mtime"] == 5, "py-misc: mode/mtime")
        check(all(e["pax_headers"].get("comment") == "global-1" for e in rep["entries"]),
              "py-misc: global header applies to members")
        check(rep["raw_headers"][0]["typeflag"] == "g", "py-misc: first header is g")
        check("linkname" not in rep["entries"][2].get("git_blob_id", "")
              and rep["entries"][2]["linkname"] == "dir/f", "py-misc: hardlink target")

        # git archive: blob ids must equal `git ls-tree -r`.
        if shutil.which("git"):
            print("git archive vs git ls-tree")
            repo = os.path.join(tmp, "repo")
            env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                       GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
                       GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
            shutil.copytree(src, repo, symlinks=True)
            g = lambda *a: subprocess.run(["git", "-C", repo] + list(a), env=env, check=True,
                                          capture_output=True).stdout
            g("init", "-q"); g("add", "-A"); g("commit", "-qm", "x")
            arc = os.path.join(tmp, "git.tar.gz")
            g("archive", "--format=tar.gz", "-o", arc, "HEAD")
            rep, _ = run_report(arc)
            ls = {}
            for line in g("ls-tree", "-r", "-z", "HEAD").split(b"\0"):
                if line:
                    meta, path = line.split(b"\t", 1)
                    mode, typ, oid = meta.split()
                    ls[path.decode()] = (mode.decode(), oid.decode())
            ents = {e["name"]: e for e in rep["entries"]}
            for path, (mode, oid) in ls.items():
                e = ents.get(path)
                check(e is not None, "git: %r missing" % path)
                if e and mode != "120000":
                    check(e["git_blob_id"] == oid, "git: blob id of %r" % path)
                    check(e["mode"] == (0o775 if mode == "100755" else 0o664),
                          "git: mode of %r is %o" % (path, e["mode"]))
            commit = g("rev-parse", "HEAD").decode().strip()
            check(rep["raw_headers"][0]["typeflag"] == "g"
                  and rep["raw_headers"][0]["pax_records"] == {"comment": commit},
                  "git: global comment header")

        # Malformed inputs.
        print("malformed inputs")
        good = os.path.join(tmp, "py-ustar.tar.gz")
        with open(good, "rb") as f:
            gz = f.read()
        raw = gzip.decompress(gz)

        def write(name, data):
            p = os.path.join(tmp, name)
            with open(p, "wb") as f:
                f.write(data)
            return p

        _, p = run_report(write("plain.tar", raw), want_rc=2)
        check("not a gzip" in p.stderr and p.stdout == "", "plain tar: message")
        _, p = run_report(write("trunc.tar.gz", gz[:len(gz) // 2]), want_rc=2)
        check(p.stdout == "", "truncated gzip: no stdout")
        bad_crc = bytearray(gz); bad_crc[-8] ^= 1
        run_report(write("badcrc.tar.gz", bytes(bad_crc)), want_rc=2)
        bad = bytearray(raw); bad[0] ^= 0x01     # breaks the first header's checksum
        run_report(write("badsum1.tar.gz", gzip.compress(bytes(bad))), want_rc=2)
        # break the 2nd header: tarfile would silently stop there
        second = None
        r0 = json.loads(subprocess.run([sys.executable, me, good], capture_output=True).stdout)
        second = r0["raw_headers"][1]["offset"]
        bad = bytearray(raw); bad[second + 1] ^= 0x01
        rep, p = run_report(write("badsum2.tar.gz", gzip.compress(bytes(bad))), want_rc=2)
        check(rep is not None and rep["raw_headers"][1]["checksum_ok"] is False,
              "bad 2nd checksum reported")
        check("did not return" in p.stderr, "tarfile early stop detected: %s" % p.stderr)
        # two gzip members, the second one holding only the end blocks
        end = len(raw)
        while end >= BLOCK and raw[end - BLOCK:end] == ZERO_BLOCK:
            end -= BLOCK
        two = gzip.compress(raw[:end]) + gzip.compress(bytes(2 * BLOCK))
        rep, _ = run_report(write("two.tar.gz", two))
        check(rep and rep["gzip_members"] == 2 and rep["trailing_zero_blocks"] == 2,
              "two members: %r" % ((rep and (rep["gzip_members"], rep["trailing_zero_blocks"])),))
        rep, p = run_report(write("onezero.tar.gz", gzip.compress(raw[:end] + ZERO_BLOCK)),
                            want_rc=2)
        check(rep and rep["trailing_zero_blocks"] == 1, "one end block reported")
        run_report(write("noend.tar.gz", gzip.compress(raw[:end])), want_rc=2)
        run_report(write("cut.tar.gz", gzip.compress(raw[:BLOCK + 100])), want_rc=2)
        run_report(write("garbage.tar.gz", gz + b"garbage"), want_rc=2)
        rep, _ = run_report(write("padded.tar.gz", gz + bytes(100)))
        check(rep and rep["gzip_trailing_zero_bytes"] == 100, "NUL padding after gzip")

    print("%d checks, %d failed" % (checks[0], len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
