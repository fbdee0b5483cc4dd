#!/usr/bin/env python3
"""A synthetic series of consecutive builds, grown from the real "new" build.

Each step is a weekly rebuild of the same Containerfile in which a sample of source packages got
a new version (3-8% of sources per step, weighted by how often each package's Debian changelog
had entries in the last three years: busy packages bump more often) and, every 5th step, the
kernel moves to a new ABI (every path with the ABI string is renamed, all its content changes).

Builds are manifests (path -> size, content hash, mtime, owner), not real trees. How a bump changes
files is calibrated on the real old -> new update (``calibrate``): the fraction of ELF files,
changelogs and other files whose content changed inside upgraded packages, the fraction whose
mtime changed, and which unowned files changed. A changed file gets a new content hash and keeps
its compressed size (a patch release rewrites bytes, it rarely changes a file's size much).
Files dpkg or maintainer scripts wrote at build time (mtime newer than the owner's own payload,
or than SOURCE_DATE_EPOCH when unowned) get the new build's wall-clock time on every step.

    python3 bench/series.py --work bench/work --steps 24   # prints a summary of the series
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model import Build, FileRec, PkgInfo

WEEK = 7 * 86400
KERNEL_PKG = re.compile(r"^linux-image-(\d+\.\d+\.\d+)-(\d+)-([a-z0-9]+)$")
#: Files that say which kernel they belong to in their path (boot files, modules, dpkg info).
INITRAMFS_DIRS = ("usr/share/initramfs-tools/", "etc/initramfs-tools/")


@dataclass(frozen=True)
class Rates:
    """Per-file change probabilities inside an upgraded package (measured or default)."""

    elf: float = 0.9
    changelog: float = 1.0
    doc: float = 0.05
    other: float = 0.15
    mtime: float = 0.9
    volatile_unowned: tuple[str, ...] = ()


DOC_DIRS = ("usr/share/doc/", "usr/share/man/", "usr/share/locale/", "usr/share/info/")


def file_class(path: str, rec: FileRec) -> str:
    if rec.elf:
        return "elf"
    if path.startswith("usr/share/doc/") and "/changelog" in path:
        return "changelog"
    if path.startswith(DOC_DIRS):
        return "doc"
    return "other"


def calibrate(old: Build, new: Build) -> tuple[Rates, dict[str, object]]:
    """Measure how an upgraded package's files changed on the real update."""
    upgraded = {
        p for p in old.packages.keys() & new.packages.keys()
        if old.packages[p].version != new.packages[p].version
    }
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    mt = [0, 0]
    for path, r in new.files.items():
        o = old.files.get(path)
        if o is None or r.kind != "reg" or o.kind != "reg" or r.owner not in upgraded:
            continue
        c = counts[file_class(path, r)]
        c[0] += 1
        c[1] += o.digest != r.digest
        mt[0] += 1
        mt[1] += o.mtime != r.mtime
    rate = {k: (v[1] / v[0] if v[0] else 0.0) for k, v in counts.items()}
    volatile = sorted(
        p for p, r in new.files.items()
        if r.owner is None and r.kind == "reg" and p in old.files
        and old.files[p].digest != r.digest and derived_from(p, new) is None
        and p not in BUILD_INPUTS
    )
    d = Rates()
    rates = Rates(
        elf=rate.get("elf", d.elf),
        changelog=rate.get("changelog", d.changelog),
        doc=rate.get("doc", d.doc),
        other=rate.get("other", d.other),
        mtime=mt[1] / mt[0] if mt[0] else d.mtime,
        volatile_unowned=tuple(volatile),
    )
    report = {
        "upgraded_packages": len(upgraded),
        "files_per_class": {k: v[0] for k, v in counts.items()},
        "content_change_rate": {k: round(v, 3) for k, v in rate.items()},
        "mtime_change_rate": round(rates.mtime, 3),
        "volatile_unowned_files": volatile,
    }
    return rates, report


#: Unowned files that differ old -> new only because the two builds used different inputs.
BUILD_INPUTS = frozenset({"etc/apt/sources.list"})


def derived_from(path: str, build: Build) -> str | None:
    """The owned file an unowned generated file is derived from, when it changes only with it.

    Byte-compiled Python caches follow their source module; dpkg's per-package info files and
    ca-certificates' bundle are handled with their package; everything else unowned that changed
    on the real update (logs, dpkg status, debconf, man-db caches, ssh host keys...) is taken to
    change on every build.
    """
    if path.endswith(".pyc") and "/__pycache__/" in path:
        d, name = path.rsplit("/__pycache__/", 1)
        src = f"{d}/{name.split('.')[0]}.py"
        return src if src in build.files else None
    if path.startswith("var/lib/dpkg/info/"):
        return path
    if path in ("etc/ssl/certs/ca-certificates.crt", "etc/ca-certificates.conf"):
        return "usr/share/ca-certificates"
    return None


def _u(*parts: object) -> float:
    """A deterministic uniform number in [0, 1) from its arguments."""
    h = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def _newhash(digest: str, step: int) -> str:
    return hashlib.sha256(f"{digest}:{step}".encode()).hexdigest()


def _stamped(build: Build) -> set[str]:
    """Paths whose mtime is the build's wall clock (written by dpkg or a maintainer script).

    The archive state a build installs predates the build: SOURCE_DATE_EPOCH is that state's
    date, so any mtime after it was made during the build.
    """
    return {p for p, r in build.files.items() if r.mtime > build.sde}


def _initramfs_pkgs(build: Build) -> set[str]:
    """Packages whose change rebuilds the initramfs: hook owners and what they depend on."""
    roots = {
        r.owner for p, r in build.files.items()
        if r.owner and (p.startswith(INITRAMFS_DIRS) or p.startswith("usr/lib/firmware/"))
    }
    roots |= {n for n in build.packages if KERNEL_PKG.match(n)}
    seen: set[str] = set()
    todo = [r for r in roots if r]
    while todo:
        n = todo.pop()
        if n in seen or n not in build.packages:
            continue
        seen.add(n)
        todo.extend(build.packages[n].depends)
    return seen


def generate(start: Build, steps: int, rates: Rates, seed: int = 1) -> list[Build]:
    """``steps`` builds after ``start`` (which is not included)."""
    rng = random.Random(seed)
    stamped0 = _stamped(start)
    ref = max((d for i in start.packages.values() for d in i.changelog_dates[:1]), default=0)
    weight: dict[str, float] = defaultdict(float)
    for info in start.packages.values():
        recent = sum(1 for d in info.changelog_dates if d >= ref - 3 * 365 * 86400)
        weight[info.source] = max(weight[info.source], 1.0 + recent)
    kernel_srcs = {
        i.source for n, i in start.packages.items()
        if KERNEL_PKG.match(n) or n.startswith("linux-image-")
    }
    sources = sorted(s for s in weight if s not in kernel_srcs)
    out: list[Build] = []
    prev = start
    stamped = set(stamped0)
    volatile = set(rates.volatile_unowned)
    initrd_pkgs = _initramfs_pkgs(start)
    derived = {
        p: d for p, r in start.files.items()
        if r.owner is None and r.kind == "reg" and (d := derived_from(p, start))
        and not p.startswith("var/lib/dpkg/info/")
    }
    for k in range(1, steps + 1):
        shift = k * WEEK
        sde = start.sde + shift
        pkgdate = sde - 86400
        frac = rng.uniform(0.03, 0.08)
        nbump = max(1, round(frac * len(sources)))
        pool = list(sources)
        chosen: list[str] = []
        for _ in range(min(nbump, len(pool))):
            total = sum(weight[s] for s in pool)
            x = rng.uniform(0, total)
            for i, s in enumerate(pool):
                x -= weight[s]
                if x <= 0:
                    chosen.append(pool.pop(i))
                    break
            else:
                chosen.append(pool.pop())
        bump_src = set(chosen)
        kernel = k % 5 == 0
        if kernel:
            bump_src |= kernel_srcs
        bumped = {n for n, i in prev.packages.items() if i.source in bump_src}
        # kernel ABI rename: every path, package and link target naming the ABI
        rename: dict[str, str] = {}
        if kernel:
            for n in prev.packages:
                m = KERNEL_PKG.match(n)
                if m:
                    old_abi = f"{m.group(1)}-{m.group(2)}"
                    rename[old_abi] = f"{m.group(1)}-{int(m.group(2)) + 1}"

        def ren(s: str, rename: dict[str, str] = rename) -> str:
            for a, b in rename.items():
                s = s.replace(a + "-", b + "-")
            return s

        pkgs: dict[str, PkgInfo] = {}
        for n, info in prev.packages.items():
            nn = ren(n)
            if n in bumped:
                info = replace(
                    info, name=nn, version=f"{info.version}+bench{k}",
                    depends=tuple(ren(d) for d in info.depends),
                    changelog_dates=(pkgdate, *info.changelog_dates),
                )
            pkgs[nn] = info
        initrd_changes = kernel or bool(bumped & initrd_pkgs)
        files: dict[str, FileRec] = {}
        new_stamped: set[str] = set()
        any_content = False
        md5_changed: set[str] = set()
        later: list[str] = []
        for p, r in prev.files.items():
            np = ren(p) if rename else p
            if p in stamped:
                new_stamped.add(np)
                r = replace(r, mtime=r.mtime + WEEK)
            if r.owner in bumped:
                owner = ren(r.owner) if rename else r.owner
                cls = file_class(p, r) if r.kind == "reg" else ""
                change = r.kind == "reg" and (
                    (kernel and r.owner != owner) or _u(seed, k, p, "c") < getattr(rates, cls)
                )
                mtime_new = r.kind in ("reg", "sym") and (
                    change or _u(seed, k, p, "m") < rates.mtime
                )
                r = replace(
                    r,
                    owner=owner,
                    digest=(
                        _newhash(r.digest, k) if change
                        else (ren(r.digest) if r.kind == "sym" else r.digest)
                    ),
                    mtime=pkgdate if mtime_new and np not in new_stamped else r.mtime,
                )
                if change:
                    any_content = True
                    md5_changed.add(owner)
            elif r.owner is None:
                if r.kind == "sym" and rename:
                    r = replace(r, digest=ren(r.digest))
                elif r.kind == "reg" and (
                    p in volatile or (initrd_changes and p.startswith("boot/initrd.img-"))
                ):
                    r = replace(r, digest=_newhash(r.digest, k))
                elif r.kind == "reg" and p in derived:
                    later.append(p)
            files[np] = r
        # generated files follow what they are generated from (bumped and changed this step)
        changed_src = {
            p for p in derived.values()
            if p in files and p in prev.files and files[p].digest != prev.files[p].digest
        }
        for p in later:
            src = derived[p]
            if src in changed_src or (
                src == "usr/share/ca-certificates"
                and any(i.source == "ca-certificates" for n, i in pkgs.items() if n in bumped)
            ):
                files[p] = replace(files[p], digest=_newhash(files[p].digest, k))
        # per-package dpkg data: a new version rewrites its md5sums
        for owner in md5_changed:
            info = "var/lib/dpkg/info/"
            for name in (f"{info}{owner}.md5sums", f"{info}{owner}:amd64.md5sums"):
                if name in files:
                    files[name] = replace(files[name], digest=_newhash(files[name].digest, k))
        del any_content
        ab = [[ren(p) if rename else p for p in layer] for layer in prev.as_built]
        b = Build(f"series-{k:02d}", files, pkgs, sde, ab)
        # the clamp time of a bumped package follows its new payload
        out.append(b)
        stamped = new_stamped
        prev = b
    return out


def summarise(series: list[Build], start: Build) -> list[dict[str, object]]:
    rows = []
    prev = start
    for b in series:
        bumped = sorted(
            n for n in b.packages
            if n not in prev.packages or prev.packages[n].version != b.packages[n].version
        )
        changed = sum(
            1 for p, r in b.files.items()
            if p not in prev.files or prev.files[p].digest != r.digest
        )
        rows.append({"build": b.name, "bumped_packages": len(bumped), "changed_files": changed,
                     "kernel": [n for n in b.packages if KERNEL_PKG.match(n)]})
        prev = b
    return rows


def main(argv: list[str] | None = None) -> int:
    from model import load_real

    ap = argparse.ArgumentParser(description="summarise the synthetic update series")
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    old, new = load_real(a.work)
    rates, report = calibrate(old, new)
    series = generate(new, a.steps, rates, a.seed)
    calib = {k: v for k, v in report.items() if k != "volatile_unowned_files"}
    print(json.dumps({"calibration": calib,
                      "steps": summarise(series, new)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
