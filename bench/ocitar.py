"""Sorted, reproducible layer tars and a minimal OCI layout writer for the benchmark corpus.

The corpus must look like what a Containerfile build pushes: one tar per build step, the
second holding only what that step changed (with ``.wh.`` whiteouts for deletions). This module
is independent of pkgchunk on purpose: the benchmark must not measure pkgchunk with pkgchunk's
own reader/writer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20

#: Directories whose content is never part of an image (runtime mounts).
RUNTIME_DIRS = ("dev", "proc", "sys")


def walk(root: Path) -> Iterator[str]:
    """Every relative path below ``root`` in byte order (parents first), runtime mounts empty."""
    stack: list[tuple[bytes, bytes]] = [(os.fsencode(root), b"")]
    out: list[bytes] = []
    while stack:
        absdir, rel = stack.pop()
        with os.scandir(absdir) as it:
            for e in it:
                r = rel + b"/" + e.name if rel else e.name
                out.append(r)
                if e.is_dir(follow_symlinks=False) and not (
                    rel == b"" and e.name.decode() in RUNTIME_DIRS
                ):
                    stack.append((e.path, r))
    out.sort()
    for r in out:
        yield os.fsdecode(r)


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(CHUNK):
            h.update(b)
    return h.hexdigest()


def xattrs_of(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for n in sorted(names):
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
    return out


@dataclass(frozen=True)
class Meta:
    """What decides whether a path changed between two trees (content hash only for files)."""

    fmt: int
    perm: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    rdev: int
    target: str
    xattrs: tuple[tuple[str, bytes], ...]


def meta_of(abspath: str) -> Meta:
    st = os.lstat(abspath)
    target = os.readlink(abspath) if stat.S_ISLNK(st.st_mode) else ""
    return Meta(
        stat.S_IFMT(st.st_mode),
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
        st.st_mtime_ns,
        st.st_size if stat.S_ISREG(st.st_mode) else 0,
        st.st_rdev,
        target,
        tuple(xattrs_of(abspath).items()),
    )


def diff_trees(base: Path, full: Path) -> tuple[list[str], list[str]]:
    """Paths of ``full`` a build step added or changed (with their parent dirs) and deleted tops.

    Like an overlay upper dir: a directory is in the diff when its own metadata changed or when
    anything below it is; a deleted subtree is one whiteout at its top.
    """
    base_paths = set(walk(base))
    full_paths = list(walk(full))
    changed: set[str] = set()
    for p in full_paths:
        fa = os.path.join(full, p)
        if p not in base_paths:
            changed.add(p)
            continue
        ba = os.path.join(base, p)
        mf, mb = meta_of(fa), meta_of(ba)
        if mf != mb or (
            mf.fmt == stat.S_IFREG and file_sha256(fa) != file_sha256(ba)
        ):
            changed.add(p)
    # parents of changed entries are part of the layer too
    for p in list(changed):
        parent = os.path.dirname(p)
        while parent and parent not in changed:
            changed.add(parent)
            parent = os.path.dirname(parent)
    full_set = set(full_paths)
    full_set.add("")
    deleted = sorted(
        p for p in base_paths if p not in full_set and os.path.dirname(p) in full_set
    )
    return sorted(changed), deleted


class _Hashing:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, sink: BinaryIO | Any) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes) -> int:
        self.sha.update(b)
        self.size += len(b)
        self.sink.write(b)
        return len(b)

    def flush(self) -> None:
        pass


@dataclass(frozen=True)
class Blob:
    digest: str  # sha256:...
    size: int
    diff_id: str = ""  # for layers: sha256 of the uncompressed tar


def _tarinfo(root: Path, rel: str, hardlinks: dict[tuple[int, int], str]) -> tarfile.TarInfo:
    ap = os.path.join(root, rel)
    st = os.lstat(ap)
    ti = tarfile.TarInfo(rel)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = int(st.st_mtime)
    m = st.st_mode
    if stat.S_ISDIR(m):
        ti.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(m):
        ti.type = tarfile.SYMTYPE
        ti.linkname = os.readlink(ap)
    elif stat.S_ISREG(m):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in hardlinks:
            ti.type = tarfile.LNKTYPE
            ti.linkname = hardlinks[key]
        else:
            if st.st_nlink > 1:
                hardlinks[key] = rel
            ti.type = tarfile.REGTYPE
            ti.size = st.st_size
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(m):
        ti.type = tarfile.FIFOTYPE
    else:
        raise ValueError(f"{ap}: unsupported file type (socket?)")
    for k, v in xattrs_of(ap).items():
        ti.pax_headers["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
    return ti


def write_layer(
    root: Path,
    paths: Iterable[str],
    whiteouts: Iterable[str],
    blobs: Path,
    whiteout_mtime: int,
    level: int = 6,
) -> Blob:
    """Write one gzip layer of ``paths`` (sorted) plus whiteouts into ``blobs``; return its blob."""
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / ".layer.tmp"
    entries: list[tuple[str, str | None]] = [(p, None) for p in paths]
    for w in whiteouts:
        d, b = os.path.split(w)
        entries.append((os.path.join(d, ".wh." + b), w))
    entries.sort(key=lambda e: os.fsencode(e[0]))
    hardlinks: dict[tuple[int, int], str] = {}
    with open(tmp, "wb") as raw:
        outer = _Hashing(raw)
        gz = gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=outer, mtime=0)
        inner = _Hashing(gz)
        with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
            for name, wh in entries:
                if wh is not None:
                    ti = tarfile.TarInfo(name)
                    ti.mode, ti.mtime = 0o644, whiteout_mtime
                    ti.uname = ti.gname = ""
                    tf.addfile(ti)
                    continue
                ti = _tarinfo(root, name, hardlinks)
                if ti.type == tarfile.REGTYPE:
                    with open(os.path.join(root, name), "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)
        gz.close()
    digest = "sha256:" + outer.sha.hexdigest()
    os.replace(tmp, blobs / digest.split(":")[1])
    return Blob(digest, outer.size, "sha256:" + inner.sha.hexdigest())


def write_json_blob(obj: Any, blobs: Path) -> Blob:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest).write_bytes(data)
    return Blob("sha256:" + digest, len(data))


def write_oci_layout(
    out: Path, layers: list[Blob], created: int, history: list[str], tag: str = "latest"
) -> None:
    """Finish an OCI image layout whose layer blobs are already in ``out/blobs/sha256``."""
    blobs = out / "blobs" / "sha256"
    iso = _iso(created)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": iso,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/bash"],
        },
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in layers]},
        "history": [{"created": iso, "created_by": h} for h in history],
    }
    cblob = write_json_blob(config, blobs)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": cblob.digest,
            "size": cblob.size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": b.digest,
                "size": b.size,
            }
            for b in layers
        ],
    }
    mblob = write_json_blob(manifest, blobs)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mblob.digest,
                "size": mblob.size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}\n')


def _iso(epoch: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
