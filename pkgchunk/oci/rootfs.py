"""Read a plain directory (``rootfs:DIR``) as an image, exactly as it is on disk.

Symlinks are never followed (they are entries with their target text), so a
tree with links pointing at the host's /usr reads the same anywhere. Files are
not copied: each regular file's data is the real file.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from pkgchunk.errors import InputError
from pkgchunk.image import Image
from pkgchunk.oci.flatten import canonical_links
from pkgchunk.oci.platform import host_arch
from pkgchunk.tree import DataRef, Entry, FileTree, Kind, decode_path

#: Errors that only mean "this filesystem has no xattrs here".
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.ENOENT}


def minimal_config() -> dict[str, Any]:
    """The config of an image that has no config of its own (host arch, linux)."""
    return {
        "architecture": host_arch(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    }


def read_rootfs(directory: str, *, ref: str | None = None) -> Image:
    """An Image of every entry under ``directory`` (the directory itself is the root)."""
    label = ref or f"rootfs:{directory}"
    if not os.path.isdir(directory):
        what = "does not exist" if not os.path.lexists(directory) else "is not a directory"
        raise InputError(f"{label}: {directory} {what}")
    root = os.fsencode(directory)
    entries: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], tuple[int, DataRef | None]] = {}
    stack: list[bytes] = [b""]
    while stack:
        rel_dir = stack.pop()
        abs_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            with os.scandir(abs_dir) as it:
                names = sorted(e.name for e in it)
        except OSError as err:
            raise InputError(f"{label}: {os.fsdecode(abs_dir)}: {err.strerror}") from err
        for name in names:
            rel = os.path.join(rel_dir, name) if rel_dir else name
            full = os.path.join(root, rel)
            entry = _entry(label, full, decode_path(rel), inodes)
            if entry is None:
                continue
            entries[entry.path] = entry
            if entry.kind == "dir":
                stack.append(rel)
    canonical_links(entries)
    tree = FileTree(entries, label=label)
    return Image(ref=label, tree=tree, config=minimal_config())


def _entry(
    label: str,
    full: bytes,
    path: str,
    inodes: dict[tuple[int, int], tuple[int, DataRef | None]],
) -> Entry | None:
    try:
        st = os.lstat(full)
        kind = _kind(st.st_mode)
        if kind is None:
            return None  # sockets: not part of an image
        target = ""
        if kind == "sym":
            target = decode_path(os.readlink(full))
        xattrs = _xattrs(full)
    except OSError as err:
        raise InputError(f"{label}: {os.fsdecode(full)}: {err.strerror}") from err
    data = DataRef(os.fsdecode(full), 0) if kind == "reg" else None
    link = 0
    if kind != "dir" and st.st_nlink > 1:
        key = (st.st_dev, st.st_ino)
        known = inodes.get(key)
        if known is None:
            inodes[key] = (len(inodes) + 1, data)
            link = len(inodes)
        else:
            link, data = known
    dev = st.st_rdev if kind in ("chr", "blk") else 0
    return Entry(
        path=path,
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime=st.st_mtime_ns // 1_000_000_000,
        size=st.st_size if kind == "reg" else 0,
        target=target,
        devmajor=os.major(dev) if dev else 0,
        devminor=os.minor(dev) if dev else 0,
        xattrs=xattrs,
        data=data,
        link=link,
    )


def _kind(mode: int) -> Kind | None:
    if stat.S_ISREG(mode):
        return "reg"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "sym"
    if stat.S_ISCHR(mode):
        return "chr"
    if stat.S_ISBLK(mode):
        return "blk"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return None


def _xattrs(full: bytes) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(full, follow_symlinks=False)
    except OSError as err:
        if err.errno in _NO_XATTR:
            return ()
        raise
    out: list[tuple[str, bytes]] = []
    for name in sorted(names):
        try:
            out.append((name, os.getxattr(full, name, follow_symlinks=False)))
        except OSError as err:
            if err.errno not in _NO_XATTR:
                raise
    return tuple(out)
