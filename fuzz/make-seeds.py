#!/usr/bin/env python3
"""Builds the binary seeds of the fuzz corpora (tar archives, ISO 9660
images) into DIR/<target>/, so no built artifact is committed; scripts/fuzz
runs it before fuzzing. Text seeds stay in fuzz/seeds/.

usage: make-seeds.py DIR    (needs xorriso for the ISOs)
"""
import io
import os
import subprocess
import sys
import tarfile
import tempfile

MTIME = 1700000000


def entry(name, kind=tarfile.DIRTYPE, data=b"", link="", mode=None):
    t = tarfile.TarInfo(name)
    t.type, t.linkname, t.mtime, t.uname, t.gname = kind, link, MTIME, "root", "root"
    t.mode = mode if mode is not None else (0o755 if kind in (tarfile.DIRTYPE, tarfile.SYMTYPE) else 0o644)
    t.size = len(data) if kind == tarfile.REGTYPE else 0
    return t, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_tar(path, entries, fmt=tarfile.GNU_FORMAT):
    # surrogateescape keeps raw, non-UTF-8 name bytes as they are.
    with tarfile.open(path, "w", format=fmt, encoding="utf-8", errors="surrogateescape") as t:
        for e in entries:
            t.addfile(*entry(*e))


D, F, L, H, P = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE
LONG = "./opt/" + "d" * 120
ROOTFS = [
    ("./",), ("./bin", L, b"", "usr/bin"), ("./etc/",), ("./etc/fifo", P),
    ("./etc/hostname", F, b"lab\n"), ("./etc/imgbuild/",), ("./opt/",), (LONG + "/",),
    (LONG + "/file", F, b"data\n"), ("./usr/",), ("./usr/bin/",), ("./usr/bin/sh", F, b"#!sh\n", "", 0o755),
    ("./usr/bin/sh2", H, b"", "./usr/bin/sh"),
]
RAW_NAMES = [
    (".",), ("./etc",), ("./x\udcfe",), ("./x\udcfe/f\udcff", F, b"raw\n"),
    ("./h", H, b"", "./x\udcfe/f\udcff"), ("./lib", L, b"", "usr/lib"), ("./opt",),
]
SPARK_LIKE = [
    ("top/",), ("top/bin/",), ("top/bin/run", F, b"#!/bin/sh\n", "", 0o755), ("top/lib/",),
    ("top/lib/a.jar", F, b"PK\n"), ("top/lib/b.jar", H, b"", "top/lib/a.jar"),
    ("top/bin/jar", L, b"", "../lib/a.jar"),
]
CHAINS = [
    ("top/",), ("top/bin/jar", L, b"", "../lib/a.jar"), ("top/lib", L, b"", "real/lib"), ("top/real/lib/",),
    ("top/real/up", L, b"", ".."), ("top/real/self", L, b"", "up/real/up/real"),
    ("top/abs", L, b"", "/opt/x/real/up/lib"),
]
ESCAPE = [("top",), ("top/x",), ("top/x/b", L, b"", ".."), ("top/a", L, b"", "x/b/../../etc/shadow")]


def isos(out):
    with tempfile.TemporaryDirectory() as src:
        files = {
            "meta-data": "instance-id: iid-fuzz\nlocal-hostname: devlab\n",
            "user-data": "#cloud-config\nhostname: devlab\n",
            "network-config": "version: 2\nethernets:\n  eth0:\n    match: {macaddress: '02:00:00:00:00:01'}\n"
                              "    addresses: [192.168.1.100/24]\n",
            "imgbuild/seed.yaml": "version: 1\nhostname: devlab\n",
        }
        for name, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(src, name)), exist_ok=True)
            with open(os.path.join(src, name), "w") as f:
                f.write(text)
        for name, flags in [("cidata.iso", ["-V", "cidata", "-J", "-R"]), ("xorriso-r.iso", ["-R"]),
                            ("xorriso-jr.iso", ["-J", "-R"])]:
            subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-no-pad", *flags, "-o", os.path.join(out, name), src],
                           check=True)


def main():
    out = sys.argv[1]
    for d in ("archive_unpack", "tar_transform", "iso9660"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    a, t = os.path.join(out, "archive_unpack"), os.path.join(out, "tar_transform")
    write_tar(os.path.join(a, "gnu-rootfs.tar"), ROOTFS)
    write_tar(os.path.join(a, "spark-like.tar"), SPARK_LIKE)
    write_tar(os.path.join(a, "symlink-chains.tar"), CHAINS)
    write_tar(os.path.join(a, "symlink-escape.tar"), ESCAPE)
    write_tar(os.path.join(t, "gnu.tar"), ROOTFS)
    write_tar(os.path.join(t, "pax.tar"), ROOTFS, tarfile.PAX_FORMAT)
    write_tar(os.path.join(t, "ustar.tar"), [e for e in ROOTFS if not e[0].startswith(LONG)], tarfile.USTAR_FORMAT)
    write_tar(os.path.join(t, "raw-names.tar"), RAW_NAMES)
    isos(os.path.join(out, "iso9660"))


if __name__ == "__main__":
    main()
