"""Source images for the writer tests: every kind of entry a layer can carry, over layers."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from typing import Any

import zstandard

from pkgchunk.image import LayerSpec
from pkgchunk.tree import DataRef, Entry, FileTree, encode_path
from tests.imagebuild import (
    Layer,
    blockdev,
    build_image,
    chardev,
    directory,
    fifo,
    file,
    hardlink,
    opaque,
    symlink,
    whiteout,
    write_layout,
)

T = 1_700_000_000

CONFIG: dict[str, Any] = {
    "created": "2024-01-02T03:04:05Z",
    "author": "writer tests",
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
        "Entrypoint": ["/usr/bin/tool"],
        "Cmd": ["--serve", "8080"],
        "User": "1000:1000",
        "WorkingDir": "/srv",
        "Labels": {"org.example.team": "writers", "version": "3"},
        "ExposedPorts": {"8080/tcp": {}},
        "Volumes": {"/data": {}},
        "StopSignal": "SIGTERM",
    },
    "history": [{"created_by": "layer one"}, {"created_by": "layer two"},
                {"created_by": "layer three"}],
}


def rich_layers() -> list[Layer]:
    """Three layers: whiteouts, an opaque dir, a hardlink into a lower layer, xattrs,
    devices, fifos, setuid bits, owners and names that are not UTF-8."""
    one = [
        directory("etc", mtime=T + 10),
        file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mtime=T + 1),
        file("etc/old.conf", b"to be deleted\n"),
        directory("usr", mtime=T + 11),
        directory("usr/bin", mode=0o711, mtime=T + 12),
        file("usr/bin/perl", b"#!perl\n" * 300, mode=0o755),
        hardlink("usr/bin/perl5.36", "usr/bin/perl"),
        file("usr/bin/su", b"su binary", mode=0o4755),
        symlink("usr/bin/sh", "dash"),
        directory("usr/share/cache", mtime=T + 3),
        file("usr/share/cache/a", b"old a"),
        file("usr/share/cache/b", b"old b"),
        directory("dev"),
        chardev("dev/null", 1, 3, mode=0o666),
        blockdev("dev/loop0", 7, 0, mode=0o660, gid=6),
        fifo("dev/initctl", mode=0o600),
        file("srv/data.bin", bytes(range(256)) * 64, uid=1000, gid=1000, mtime=T + 100),
        file(b"srv/caf\xe9.txt", b"latin-1 name\n"),
        directory(b"srv/r\xe9pertoire", mode=0o700),
        file(b"srv/r\xe9pertoire/f\xff", b"\xff\xfe"),
        file("usr/bin/ping", b"ping", mode=0o755,
             xattrs={"security.capability": b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\0" * 12}),
    ]
    two = [
        whiteout("etc/old.conf"),
        opaque("usr/share/cache"),
        file("usr/share/cache/c", b"new c", mtime=T + 20),
        file("etc/passwd", b"root:x:0:0::/root:/bin/bash\n", mtime=T + 21),
        hardlink("usr/bin/perl-again", "usr/bin/perl"),
        file("etc/notes", b"with xattrs", xattrs={"user.comment": b"caf\xc3\xa9",
                                                  "user.raw": b"\x00\xff\x00"}),
    ]
    three = [
        directory("opt/app", mtime=T + 30),
        *(file(f"opt/app/m{i:03d}.py", f"# module {i}\n".encode() * (i + 1), mtime=T + i)
          for i in range(60)),
        symlink("opt/app/current", "/opt/app/m000.py"),
        file("a-b", b"top-level file sorting between a and a/"),
        file("a/x", b"under a"),
    ]
    return [Layer(one), Layer(two, compression="zstd"), Layer(three, compression="none")]


def make_source(dest: Path, tag: str = "src") -> str:
    """An OCI layout of :func:`rich_layers` at ``dest``; returns its reference."""
    built = build_image(rich_layers(), config=CONFIG)
    write_layout(dest, {tag: built})
    return f"oci:{dest}:{tag}"


def split_specs(tree: FileTree, prefix: str = "L") -> list[LayerSpec]:
    """One layer per top-level name, hardlink groups with their first path."""
    by_top: dict[str, list[str]] = {}
    first_of: dict[int, str] = {}
    for path in tree.paths():
        e = tree.entries[path]
        top = path.split("/", 1)[0]
        if e.link:
            top = first_of.setdefault(e.link, top)
        by_top.setdefault(top, []).append(path)
    return [
        LayerSpec(name=f"{prefix}{i}", paths=tuple(sorted(ps, key=encode_path)),
                  annotations=(("org.example.top", top.encode("utf-8", "surrogateescape")
                                .decode("utf-8", "backslashreplace")),),
                  comment=f"files under /{top}")
        for i, (top, ps) in enumerate(sorted(by_top.items()))
    ]


def decompress(blob: bytes) -> bytes:
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return blob


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> set[str]:
    out = set()
    for base, _dirs, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(base, n), root))
    return out


class TreeBuilder:
    """A FileTree whose regular files live in one data file under ``root``."""

    def __init__(self, root: Path) -> None:
        self.data = root / "content.bin"
        self.data.write_bytes(b"")
        self.entries: dict[str, Entry] = {}

    def reg(self, path: str, content: bytes, **kw: object) -> None:
        offset = self.data.stat().st_size
        with self.data.open("ab") as f:
            f.write(content)
        kw.setdefault("mode", 0o644)
        self.entries[path] = Entry(
            path=path, kind="reg", size=len(content), data=DataRef(str(self.data), offset),
            **kw,  # type: ignore[arg-type]
        )

    def add(self, path: str, kind: str, **kw: object) -> None:
        kw.setdefault("mode", 0o755 if kind == "dir" else 0o777 if kind == "sym" else 0o644)
        self.entries[path] = Entry(path=path, kind=kind, **kw)  # type: ignore[arg-type]

    def tree(self) -> FileTree:
        return FileTree(dict(self.entries), label="test")
