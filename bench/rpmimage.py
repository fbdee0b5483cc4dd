#!/usr/bin/env python3
"""An RPM-shaped image synthesised from a real rpm database, for RPM-side benchmarks and demos.

    python3 bench/rpmimage.py --out bench/work

Every file the CBL-Mariner 2.0 rpmdb lists (``/work/shared/fixtures/rpmdb/
cbl-mariner-2.0-sqlite``) is created at its recorded path, mode, size and mtime, symlinks point
where rpm says, and the database itself sits at ``var/lib/rpm/rpmdb.sqlite`` (copied at build
time, never into git). Regular files get deterministic pseudo-random content seeded by the file's
recorded digest (so files rpm says are identical are identical): 40% incompressible 4 KiB blocks
and 60% blocks of a repeated 512-byte pattern, about 2:1 under gzip like real binaries;
executables and shared objects start with the ELF magic so the benchmark classifies them as it
would real ones. Ghost files are left out, as rpm does not install them. Outputs:
``rpm-mariner.rootfs/`` and the OCI layout ``rpm-mariner/`` (one gzip layer, tag latest).
Idempotent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import model
import ocitar
from model import resolve_parent

FIXTURE = Path("/work/shared/fixtures/rpmdb/cbl-mariner-2.0-sqlite")
NAME = "rpm-mariner"
USERS = {"root": 0, "utmp": 22}


def looks_elf(path: str, mode: int) -> bool:
    """Executables and shared objects were ELF in the real image: keep that file class."""
    name = path.rsplit("/", 1)[-1]
    return bool(mode & 0o111) or name.endswith(".so") or ".so." in name


def content(seed: str, size: int, elf: bool = False) -> bytes:
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    out = bytearray(b"\x7fELF" if elf else b"")
    while len(out) < size:
        if rng.random() < 0.4:
            out += rng.randbytes(4096)
        else:
            out += rng.randbytes(512) * 8
    return bytes(out[:size])


def rpm_extra(db: Path) -> dict[str, tuple[str, int]]:
    """path -> (link target, mtime) from rpm itself (files.tsv carries neither)."""
    res = subprocess.run(
        ["rpm", "--dbpath", str(db.resolve()), "-qa", "--qf",
         "[%{FILENAMES}\\t%{FILELINKTOS}\\t%{FILEMTIMES}\\n]"],
        check=True, capture_output=True, text=True,
    )
    out = {}
    for line in res.stdout.splitlines():
        p, t, m = line.split("\t")
        out[p] = (t, int(m))
    return out


def build(out: Path, fixture: Path = FIXTURE) -> Path:
    rootfs = out / f"{NAME}.rootfs"
    image = out / NAME
    if (image / "index.json").exists():
        return image
    dbcopy = out / f"{NAME}.dbq"
    shutil.rmtree(dbcopy, ignore_errors=True)
    dbcopy.mkdir(parents=True)
    shutil.copy2(fixture / "rpmdb.sqlite", dbcopy / "rpmdb.sqlite")
    extra = rpm_extra(dbcopy)
    shutil.rmtree(dbcopy)
    rows = []
    with open(fixture / "files.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            _nevra, path, mode, size, digest, flags, user, group = line.rstrip("\n").split("\t")
            if "g" in flags:
                continue
            rows.append((path, int(mode, 8), int(size), digest, user, group))
    rows.sort(key=lambda r: r[0])
    tmp = rootfs.with_name(rootfs.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    seen: set[str] = set()
    mtimes: dict[str, int] = {}
    # pass 1: directories and symlinks, so pass 2 resolves paths through the tree's own links
    for path, mode, _size, _digest, user, group in rows:
        kind = mode & 0o170000
        if kind not in (0o040000, 0o120000) or path in seen:
            continue
        rel = resolve_parent(tmp, path, {})
        ap = tmp / rel
        if kind == 0o040000:
            if ap.is_symlink():
                continue  # a symlink that another package also lists as a directory
            ap.mkdir(parents=True, exist_ok=True)
        else:
            ap.parent.mkdir(parents=True, exist_ok=True)
            if not ap.exists() and not ap.is_symlink():
                os.symlink(extra.get(path, ("", 0))[0] or "missing-target", ap)
        os.lchown(ap, USERS.get(user, 0), USERS.get(group, 0))
        if kind == 0o040000:
            os.chmod(ap, mode & 0o7777)
        mtimes[rel] = extra.get(path, ("", 0))[1]
        seen.add(path)
    cache: dict[str, str] = {}
    for path, mode, size, digest, user, group in rows:
        if mode & 0o170000 != 0o100000 or path in seen:
            continue
        rel = resolve_parent(tmp, path, cache)
        ap = tmp / rel
        ap.parent.mkdir(parents=True, exist_ok=True)
        ap.write_bytes(content(digest or path, size, looks_elf(path, mode)))
        os.chown(ap, USERS.get(user, 0), USERS.get(group, 0))
        os.chmod(ap, mode & 0o7777)
        mtimes[rel] = extra.get(path, ("", 0))[1]
        seen.add(path)
    db = tmp / "var/lib/rpm"
    db.mkdir(parents=True, exist_ok=True)
    shutil.copy2(fixture / "rpmdb.sqlite", db / "rpmdb.sqlite")
    sde = max(mtimes.values())
    for rel in sorted(mtimes, key=lambda r: -r.count("/")):  # children before parents
        t = mtimes[rel] or sde
        os.utime(tmp / rel, (t, t), follow_symlinks=False)
    tmp.rename(rootfs)
    itmp = image.with_name(image.name + ".tmp")
    shutil.rmtree(itmp, ignore_errors=True)
    blob = ocitar.write_layer(rootfs, list(ocitar.walk(rootfs)), [], itmp / "blobs/sha256", sde)
    history = [f"synthesised from {fixture.name} (bench/rpmimage.py)"]
    ocitar.write_oci_layout(itmp, [blob], sde, history)
    itmp.rename(image)
    return image


def _rpmq(db: Path, qf: str) -> list[str]:
    res = subprocess.run(["rpm", "--dbpath", str(db.resolve()), "-qa", "--qf", qf],
                         check=True, capture_output=True, text=True)
    return res.stdout.splitlines()


def load_build(out: Path, cache: model.CsizeCache, fixture: Path = FIXTURE) -> model.Build:
    """The synthesised RPM image as a benchmark Build, ownership and metadata from rpm itself."""
    image = build(out, fixture)
    rootfs = out / f"{NAME}.rootfs"
    dbq = out / f"{NAME}.dbq"
    shutil.rmtree(dbq, ignore_errors=True)
    dbq.mkdir()
    shutil.copy2(fixture / "rpmdb.sqlite", dbq / "rpmdb.sqlite")
    try:
        meta = {}
        for line in _rpmq(dbq, "%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{SOURCERPM}\\t%{SIZE}\\n"):
            n, v, srpm, size = line.split("\t")
            src = srpm.rsplit("-", 2)[0] if srpm != "(none)" else n
            meta[n] = (v, src, int(size))
        provides: dict[str, str] = {}
        for line in _rpmq(dbq, "[%{=NAME}\\t%{PROVIDENAME}\\n]"):
            n, prov = line.split("\t")
            provides.setdefault(prov, n)
        owners: dict[str, set[str]] = {}
        rcache: dict[str, str] = {}
        for line in _rpmq(dbq, "[%{=NAME}\\t%{FILENAMES}\\n]"):
            n, path = line.split("\t")
            provides.setdefault(path, n)
            owners.setdefault(resolve_parent(rootfs, path, rcache), set()).add(n)
        requires: dict[str, set[str]] = {n: set() for n in meta}
        for line in _rpmq(dbq, "[%{=NAME}\\t%{REQUIRENAME}\\n]"):
            n, req = line.split("\t")
            if (p := provides.get(req)) and p != n and n in requires:
                requires[n].add(p)
        clog: dict[str, list[int]] = {n: [] for n in meta}
        for line in _rpmq(dbq, "[%{=NAME}\\t%{CHANGELOGTIME}\\n]"):
            n, t = line.split("\t")
            if t.isdigit() and n in clog:
                clog[n].append(int(t))
    finally:
        shutil.rmtree(dbq, ignore_errors=True)
    pkgs = {
        n: model.PkgInfo(n, v, src, size // 1024, tuple(sorted(requires[n])), (),
                         tuple(sorted(clog[n], reverse=True)))
        for n, (v, src, size) in meta.items()
    }
    index = json.loads((image / "index.json").read_text())
    sde = int(datetime.fromisoformat(
        json.loads((image / "blobs/sha256" / _config_digest(image, index)).read_text())["created"]
        .replace("Z", "+00:00")).timestamp())
    b = model.scan_rootfs(rootfs, NAME, sde, cache, with_dpkg=False)
    files = {}
    for p, r in b.files.items():
        own = owners.get(p)
        owner = None
        if own and (len(own) == 1 or r.kind != "dir"):
            owner = sorted(own)[0]
        files[p] = replace(r, owner=owner)
    return model.Build(NAME, files, pkgs, sde, [sorted(files)])


def _config_digest(image: Path, index: dict[str, object]) -> str:
    mans = index["manifests"]
    assert isinstance(mans, list)
    m = json.loads((image / "blobs/sha256" / mans[0]["digest"][7:]).read_text())
    return str(m["config"]["digest"][7:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="synthesise the RPM-shaped benchmark image")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "work")
    ap.add_argument("--fixture", type=Path, default=FIXTURE)
    a = ap.parse_args(argv)
    if not (a.fixture / "files.tsv").exists():
        print(f"rpmimage.py: {a.fixture}: no files.tsv (shared fixtures absent)", file=sys.stderr)
        return 2
    img = build(a.out, a.fixture)
    print(img)
    return 0


if __name__ == "__main__":
    sys.exit(main())
