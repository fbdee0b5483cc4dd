"""The benchmark's view of one image build: files with owners and estimated compressed sizes.

Strategies and scoring work on this lightweight model instead of real tars so that a 24-build
series fits in memory and seconds. A file's compressed size is estimated once as the gzip -6 size
of that file alone (cached by content hash) plus a fixed tar-entry overhead; ``bench/run.py``
checks this estimate against the real layer blobs of the corpus and reports the error.

Ownership for the benchmark comes from dpkg's own tools (``dpkg-query --admindir``) and the
``info/*.list`` files of the built roots; pkgchunk itself must not use dpkg-query.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat
import subprocess
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import ocitar

#: Bump when FileRec/PkgInfo/Build or the scan change: cached scans of older versions are redone.
MODEL_VERSION = 2

#: Estimated compressed bytes a tar entry costs beyond its content (512-byte header, gzipped).
ENTRY_OVERHEAD = 64


@dataclass(frozen=True, slots=True)
class FileRec:
    """One path of a build. ``digest`` is the content hash (files) or link target (symlinks)."""

    kind: str  # reg dir sym chr blk fifo
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    digest: str
    csize: int  # estimated gzip bytes in a layer, entry overhead included
    owner: str | None  # binary package owning the path alone; None = unowned or shared dir
    elf: bool = False


@dataclass(frozen=True, slots=True)
class PkgInfo:
    name: str
    version: str
    source: str
    installed_kib: int
    depends: tuple[str, ...]  # installed binary packages this one Depends/Pre-Depends on
    replaces: tuple[str, ...]
    changelog_dates: tuple[int, ...]  # epoch seconds of every changelog entry, newest first


@dataclass
class Build:
    """One image build: what every strategy gets as input (read-only by convention)."""

    name: str
    files: dict[str, FileRec]
    packages: dict[str, PkgInfo]
    sde: int  # SOURCE_DATE_EPOCH of the build (clamp target for unowned files)
    as_built: list[list[str]]  # the build's own layers, as path lists
    stable_time: dict[str, int] = field(default_factory=dict)  # package -> newest payload mtime

    def __post_init__(self) -> None:
        if not self.stable_time:
            self.stable_time = owner_stable_times(self.files, self.sde)

    def by_owner(self) -> dict[str | None, list[str]]:
        out: dict[str | None, list[str]] = defaultdict(list)
        for p, r in self.files.items():
            out[r.owner].append(p)
        return out

    def source_of(self, pkg: str | None) -> str | None:
        if pkg is None:
            return None
        info = self.packages.get(pkg)
        return info.source if info else pkg

    def clamped_mtime(self, path: str) -> int:
        """The mtime policy of design-notes §1: owned -> owner's stable time, unowned -> SDE."""
        r = self.files[path]
        if r.owner is not None and r.owner in self.stable_time:
            return min(r.mtime, self.stable_time[r.owner])
        return min(r.mtime, self.sde)


def owner_stable_times(files: dict[str, FileRec], sde: int) -> dict[str, int]:
    """Newest payload mtime per package: its files' mtimes not after SOURCE_DATE_EPOCH.

    A package's payload predates the archive state the build used (SDE is the suite's date);
    what is newer was written at build time by dpkg or a maintainer script.
    """
    out: dict[str, int] = {}
    for r in files.values():
        if r.owner is not None and r.kind in ("reg", "sym") and r.mtime <= sde:
            out[r.owner] = max(out.get(r.owner, 0), r.mtime)
    return out


# ---------------------------------------------------------------- compressed-size cache


class CsizeCache:
    """gzip -6 size of a content hash, persisted as JSON across runs."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, int] = {}
        if path is not None and path.exists():
            self.data = json.loads(path.read_text())
        self.dirty = False

    def save(self) -> None:
        if self.path is not None and self.dirty:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            os.replace(tmp, self.path)
            self.dirty = False


def hash_and_csize(path: str, cache: CsizeCache) -> tuple[str, int, bool]:
    """(sha256, gzip -6 size of the file alone, is ELF); compresses only unseen content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        first = f.read(4)
        h.update(first)
        while b := f.read(ocitar.CHUNK):
            h.update(b)
    d = h.hexdigest()
    elf = first == b"\x7fELF"
    if d not in cache.data:
        comp = zlib.compressobj(6, zlib.DEFLATED, 31)
        n = 0
        with open(path, "rb") as f:
            while b := f.read(ocitar.CHUNK):
                n += len(comp.compress(b))
        cache.data[d] = n + len(comp.flush())
        cache.dirty = True
    return d, cache.data[d], elf


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, 6, mtime=0))


# ---------------------------------------------------------------- dpkg metadata

_DEP_NAME = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)")


def _dep_names(field_value: str) -> list[list[str]]:
    out = []
    for clause in field_value.split(","):
        alts = []
        for alt in clause.split("|"):
            m = _DEP_NAME.match(alt)
            if m:
                alts.append(m.group(1))
        if alts:
            out.append(alts)
    return out


def read_dpkg(root: Path) -> tuple[dict[str, PkgInfo], dict[str, list[str]]]:
    """Installed packages (with resolved deps) and package -> listed paths, via dpkg-query."""
    admin = root / "var/lib/dpkg"
    fmt = (
        "${binary:Package}\\t${Version}\\t${source:Package}\\t${Installed-Size}\\t"
        "${db:Status-Abbrev}\\t${Depends}\\t${Pre-Depends}\\t${Provides}\\t${Replaces}\\n"
    )
    res = subprocess.run(
        ["dpkg-query", f"--admindir={admin}", "-W", f"-f={fmt}"],
        check=True, capture_output=True, text=True,
    )
    rows = []
    provides: dict[str, str] = {}
    for line in res.stdout.splitlines():
        name, ver, src, isize, st, dep, pre, prov, repl = line.split("\t")
        if st.strip() != "ii":
            continue
        name = name.split(":")[0]
        rows.append((name, ver, src, int(isize or 0), dep + "," + pre, repl))
        for alts in _dep_names(prov):
            provides.setdefault(alts[0], name)
    installed = {r[0] for r in rows}

    def resolve(alts: list[str]) -> str | None:
        for a in alts:
            if a in installed:
                return a
            if a in provides:
                return provides[a]
        return None

    lists: dict[str, list[str]] = {}
    infodir = admin / "info"
    pkgs: dict[str, PkgInfo] = {}
    for name, ver, src, isize, deps, repl in rows:
        dset = sorted({d for alts in _dep_names(deps) if (d := resolve(alts)) and d != name})
        rset = sorted({a[0] for a in _dep_names(repl) if a[0] in installed and a[0] != name})
        pkgs[name] = PkgInfo(name, ver, src, isize, tuple(dset), tuple(rset), ())
        for cand in (f"{name}.list", f"{name}:amd64.list"):
            lf = infodir / cand
            if lf.exists():
                lists[name] = [
                    ln for ln in lf.read_text("utf-8", "surrogateescape").splitlines()
                    if ln and ln != "/."
                ]
                break
    return pkgs, lists


_TRAILER = re.compile(r"^ -- .*?>  (.+)$")


def changelog_dates(root: Path, pkg: str) -> tuple[int, ...]:
    """Dates of the entries of a package's Debian changelog (newest first), () if absent."""
    d = root / "usr/share/doc" / pkg
    for _hop in range(4):  # doc dirs may be symlinks to a sibling package's
        if d.is_symlink():
            t = os.readlink(d)
            d = (root / t.lstrip("/")) if t.startswith("/") else d.parent / t
        else:
            break
    out: list[int] = []
    for name in ("changelog.Debian.gz", "changelog.gz"):
        f = d / name
        if not f.is_file():
            continue
        try:
            with gzip.open(f, "rt", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    m = _TRAILER.match(line.rstrip("\n"))
                    if m:
                        try:
                            out.append(int(parsedate_to_datetime(m.group(1)).timestamp()))
                        except (TypeError, ValueError):
                            continue
        except (OSError, EOFError):
            continue
        break
    return tuple(sorted(out, reverse=True))


def resolve_parent(root: Path, path: str, cache: dict[str, str]) -> str:
    """Canonical tree path of a .list entry: its parent dirs resolved through the tree's symlinks.

    Debian's .list files say /bin/ls while a merged-/usr tree holds usr/bin/ls.
    """
    rel = path.lstrip("/")
    parent, base = os.path.split(rel)
    if not parent:
        return rel
    if parent in cache:
        return f"{cache[parent]}/{base}" if cache[parent] else base
    parts: list[str] = []
    todo = parent.split("/")
    hops = 0
    while todo:
        c = todo.pop(0)
        if c in ("", "."):
            continue
        if c == "..":
            if parts:
                parts.pop()
            continue
        cand = "/".join([*parts, c])
        full = root / cand
        if full.is_symlink() and hops < 40:
            hops += 1
            t = os.readlink(full)
            if t.startswith("/"):
                parts = []
            todo = t.split("/") + todo
            continue
        parts.append(c)
    res = "/".join(parts)
    cache[parent] = res
    return f"{res}/{base}" if res else base


# ---------------------------------------------------------------- scanning a root


def scan_rootfs(
    root: Path,
    name: str,
    sde: int,
    cache: CsizeCache,
    as_built: list[list[str]] | None = None,
    with_dpkg: bool = True,
) -> Build:
    """Read a real root directory into a Build (ownership from its dpkg database)."""
    pkgs: dict[str, PkgInfo] = {}
    owners: dict[str, set[str]] = defaultdict(set)
    if with_dpkg:
        pkgs, lists = read_dpkg(root)
        rcache: dict[str, str] = {}
        for pkg, paths in lists.items():
            for p in paths:
                owners[resolve_parent(root, p, rcache)].add(pkg)
        pkgs = {k: replace(v, changelog_dates=changelog_dates(root, k)) for k, v in pkgs.items()}
    files: dict[str, FileRec] = {}
    for rel in ocitar.walk(root):
        ap = os.path.join(root, rel)
        st = os.lstat(ap)
        m = st.st_mode
        elf = False
        if stat.S_ISREG(m):
            kind = "reg"
            digest, csz, elf = hash_and_csize(ap, cache)
        elif stat.S_ISDIR(m):
            kind, digest, csz = "dir", "", 0
        elif stat.S_ISLNK(m):
            kind, digest, csz = "sym", os.readlink(ap), 0
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            kind = "chr" if stat.S_ISCHR(m) else "blk"
            digest, csz = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}", 0
        elif stat.S_ISFIFO(m):
            kind, digest, csz = "fifo", "", 0
        else:
            continue
        own = owners.get(rel)
        owner = None
        if own:
            # a path several packages list is a shared directory (or a diverted file): unowned
            owner = sorted(own)[0] if (len(own) == 1 or kind != "dir") else None
        files[rel] = FileRec(
            kind, stat.S_IMODE(m), st.st_uid, st.st_gid, int(st.st_mtime),
            st.st_size if kind == "reg" else 0, digest, csz + ENTRY_OVERHEAD, owner, elf,
        )
    if as_built is None:
        as_built = [sorted(files)]
    return Build(name, files, pkgs, sde, as_built)


def as_built_from_image(
    image_dir: Path, base_paths: Iterable[str], files: Iterable[str]
) -> list[list[str]]:
    """The two layers of a corpus image as path lists (layer 2 overrides layer 1)."""
    info = json.loads((image_dir / "bench-layers.json").read_text())
    l2 = set(info["layer2_paths"])
    fs = set(files)
    l1 = sorted(p for p in base_paths if p not in l2 and p in fs)
    return [l1, sorted(p for p in l2 if p in fs)]


def changelog_freq(info: PkgInfo, ref: int, days: int = 365) -> int:
    """Changelog entries within ``days`` before ``ref`` (rpm-ostree's change_frequency)."""
    lo = ref - days * 86400
    return sum(1 for d in info.changelog_dates if lo <= d <= ref)


def changelog_days(info: PkgInfo, ref: int, days: int = 365) -> int:
    """Distinct changelog days within ``days`` before ``ref`` (chunkah's λ numerator)."""
    lo = ref - days * 86400
    return len({d // 86400 for d in info.changelog_dates if lo <= d <= ref})


def iso(epoch: int) -> str:
    return datetime.utcfromtimestamp(epoch).strftime("%Y-%m-%d")


def load_real(work: Path, cache: CsizeCache | None = None) -> tuple[Build, Build]:
    """The real old and new corpus builds (scanned once, then pickled in ``work``)."""
    import pickle

    pk = work / "models.pickle"
    if pk.exists():
        with open(pk, "rb") as f:
            version, old, new = pickle.load(f)
        if version == MODEL_VERSION:
            return old, new
    cache = cache or CsizeCache(work / "csize-cache.json")
    builds = []
    for state in ("old", "new"):
        root = work / f"debian-{state}.rootfs"
        sde = int((work / f"debian-{state}.sde").read_text())
        b = scan_rootfs(root, f"debian-{state}", sde, cache)
        base = work / f"debian-{state}.base"
        b.as_built = as_built_from_image(work / f"debian-{state}", ocitar.walk(base), b.files)
        builds.append(b)
        cache.save()
    with open(pk.with_suffix(".tmp"), "wb") as f:
        pickle.dump((MODEL_VERSION, builds[0], builds[1]), f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(pk.with_suffix(".tmp"), pk)
    return builds[0], builds[1]
