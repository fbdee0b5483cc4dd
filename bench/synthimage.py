#!/usr/bin/env python3
"""A synthetic dpkg-shaped OCI image of any size, for pkgchunk's memory and speed scaling.

    python3 bench/synthimage.py OUT --files 200000 --file-bytes 25000 [--compression gzip]

``files`` regular files of ``file_bytes`` bytes on average (sizes spread 0.5x-1.5x, the total
is exact) are spread over packages of log-normal size, 100 files on average (Debian: ~90, most
packages small, a few with thousands), each with its own directory tree, and a
``var/lib/dpkg`` database (``status`` and ``info/PKG.list``) owns every file. Content is cut
from a fixed pool, a quarter random and three quarters text, which compresses about 1.6:1.
Two layers, like a Containerfile build: the first quarter of the packages, then the rest plus
the database.

Everything is a function of the arguments (fixed mtimes, sorted tars, fixed seed), so two
builds give the same digests. Independent of pkgchunk on purpose, like ``ocitar.py``: the
benchmark must not build its input with the code it measures.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import random
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

Compression = Literal["gzip", "none"]

MTIME = 1_700_000_000
FILES_PER_PACKAGE = 100
FILES_PER_DIR = 50
_POOL_BYTES = 8 << 20
MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


@dataclass(frozen=True)
class Spec:
    files: int
    file_bytes: int
    compression: Compression = "none"

    @property
    def packages(self) -> int:
        return len(_package_sizes(self.files))

    @property
    def name(self) -> str:
        return f"synth-{self.files}x{self.file_bytes}-{self.compression}"


def _pool(seed: int = 5) -> bytes:
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(2000)]
    out = bytearray()
    while len(out) < _POOL_BYTES:
        out += rng.randbytes(2048)  # incompressible, like code
        line = b" ".join(rng.choice(words) for _ in range(1000))  # text, ~3:1
        out += line[:6144]
    return bytes(out[:_POOL_BYTES])


def _sizes(spec: Spec) -> list[int]:
    """Per-file sizes between 0.5x and 1.5x the mean, summing exactly to files * file_bytes."""
    rng = random.Random(11)
    sizes = [int(spec.file_bytes * (0.5 + rng.random())) for _ in range(spec.files)]
    diff = spec.files * spec.file_bytes - sum(sizes)
    i = 0
    while diff:
        step = max(-sizes[i] // 2, min(diff, spec.file_bytes))
        sizes[i] += step
        diff -= step
        i = (i + 1) % spec.files
    return sizes


def _pkg(n: int) -> str:
    return f"synth-{n:05d}"


def _package_sizes(files: int) -> list[int]:
    """Files per package: log-normal (sigma 1.5) with mean FILES_PER_PACKAGE, like Debian's
    many small packages and few big ones; the counts add up to ``files``."""
    rng = random.Random(3)
    mu = math.log(FILES_PER_PACKAGE) - 1.5**2 / 2
    out: list[int] = []
    left = files
    while left > 0:
        n = min(left, max(1, round(rng.lognormvariate(mu, 1.5))))
        out.append(n)
        left -= n
    return out


def _layout(spec: Spec) -> Iterator[tuple[int, str]]:
    """(package number, path) of every regular file, in file order."""
    i = 0
    for pkg, count in enumerate(_package_sizes(spec.files)):
        for k in range(count):
            yield pkg, f"usr/share/synth/{_pkg(pkg)}/d{k // FILES_PER_DIR:03d}/f{i:07d}.bin"
            i += 1


class _Hashing:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes) -> int:
        self.sha.update(b)
        self.size += len(b)
        self.out.write(b)
        return len(b)

    def flush(self) -> None:
        pass


def _info(name: str, kind: bytes, size: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    ti.mtime = MTIME
    ti.size = size
    ti.uname = ti.gname = ""
    return ti


class _Bytes:
    """A read-only view of a slice of the pool (tarfile reads file data through it)."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else min(len(self.data), self.pos + n)
        out = bytes(self.data[self.pos : end])
        self.pos = end
        return out


def _write_layer(
    blobs: Path, members: list[tuple[str, bytes | int]], spec: Spec, pool: bytes
) -> tuple[str, int, str]:
    """One sorted layer tar: ``members`` are (path, file number or literal bytes); dirs added.

    Returns (blob digest, blob size, diff_id).
    """
    dirs: set[str] = set()
    for path, _ in members:
        d = os.path.dirname(path)
        while d and d not in dirs:
            dirs.add(d)
            d = os.path.dirname(d)
    entries: list[tuple[str, bytes | int | None]] = [(d, None) for d in dirs]
    entries += members
    entries.sort(key=lambda e: e[0].encode())
    sizes = _sizes(spec)
    view = memoryview(pool)
    tmp = blobs / ".layer.tmp"
    with open(tmp, "wb") as raw:
        outer = _Hashing(raw)
        gz = (gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=outer, mtime=0)
              if spec.compression == "gzip" else None)
        inner = _Hashing(gz if gz is not None else outer)  # type: ignore[arg-type]
        with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
            for path, what in entries:
                if what is None:
                    tf.addfile(_info(path, tarfile.DIRTYPE))
                elif isinstance(what, bytes):
                    tf.addfile(_info(path, tarfile.REGTYPE, len(what)), _Bytes(memoryview(what)))
                else:
                    size = sizes[what]
                    off = (what * 104_729) % (len(pool) - size)
                    tf.addfile(_info(path, tarfile.REGTYPE, size), _Bytes(view[off : off + size]))
        if gz is not None:
            gz.close()
    digest = outer.sha.hexdigest()
    os.replace(tmp, blobs / digest)
    return f"sha256:{digest}", outer.size, f"sha256:{inner.sha.hexdigest()}"


def _database(spec: Spec, pkgs: range) -> list[tuple[str, bytes | int]]:
    status = []
    out: list[tuple[str, bytes | int]] = []
    listed: dict[int, list[str]] = {p: [] for p in pkgs}
    for pkg, path in _layout(spec):
        if pkg in listed:
            listed[pkg].append(path)
    for p in pkgs:
        name = _pkg(p)
        status.append(
            f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
            f"Section: misc\nInstalled-Size: {spec.file_bytes * len(listed[p]) // 1024}\n"
            f"Maintainer: Bench <bench@example.org>\nArchitecture: amd64\nVersion: 1.{p}-1\n"
            f"Description: synthetic package {p}\n"
        )
        dirs: set[str] = set()
        for path in listed[p]:
            d = os.path.dirname(path)
            while d and d not in dirs:
                dirs.add(d)
                d = os.path.dirname(d)
        lines = ["/.", *sorted("/" + x for x in dirs | set(listed[p]))]
        out.append((f"var/lib/dpkg/info/{name}.list", ("\n".join(lines) + "\n").encode()))
    out.append(("var/lib/dpkg/status", "\n".join(status).encode()))
    return out


def build(out: Path, spec: Spec) -> Path:
    """Write the image as an OCI layout ``out`` (tag ``latest``); returns ``out``.

    An existing layout with a matching ``synth.json`` is kept as it is.
    """
    stamp = out / "synth.json"
    want = {"files": spec.files, "file_bytes": spec.file_bytes, "compression": spec.compression,
            "version": 2}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return out
    shutil.rmtree(out, ignore_errors=True)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    pool = _pool()
    split = max(1, spec.packages // 4)
    first: list[tuple[str, bytes | int]] = []
    second: list[tuple[str, bytes | int]] = []
    for i, (pkg, path) in enumerate(_layout(spec)):
        (first if pkg < split else second).append((path, i))
    second += _database(spec, range(spec.packages))
    layers = [_write_layer(blobs, m, spec, pool) for m in (first, second) if m]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [d for _, _, d in layers]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": f"layer {n}"}
                    for n in range(len(layers))],
    }
    cdesc = _json_blob(blobs, config, "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cdesc,
        "layers": [{"mediaType": MEDIA_TYPES[spec.compression], "digest": d, "size": s}
                   for d, s, _ in layers],
    }
    mdesc = _json_blob(blobs, manifest, "application/vnd.oci.image.manifest.v1+json")
    mdesc["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [mdesc]}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}\n')
    stamp.write_text(json.dumps(want) + "\n")
    return out


def _json_blob(blobs: Path, doc: object, media_type: str) -> dict[str, object]:
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def unpack(layout: Path, root: Path) -> Path:
    """Extract the layers into ``root`` (a ``rootfs:`` input; the layers have no whiteouts)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    index = json.loads((layout / "index.json").read_text())
    mdigest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / mdigest).read_text())
    for layer in manifest["layers"]:
        blob = layout / "blobs" / "sha256" / layer["digest"].split(":")[1]
        with tarfile.open(blob, "r:*") as tf:
            tf.extractall(root, filter="tar")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--file-bytes", type=int, default=25_000)
    ap.add_argument("--compression", choices=("gzip", "none"), default="none")
    ap.add_argument("--rootfs", type=Path, help="also extract the image into this directory")
    a = ap.parse_args()
    build(a.out, Spec(a.files, a.file_bytes, a.compression))
    if a.rootfs:
        unpack(a.out, a.rootfs)
    print(a.out)


if __name__ == "__main__":
    main()
