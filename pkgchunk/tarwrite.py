"""Reproducible layer tars: the same tree and LayerSpec give the same bytes, always.

Members come in byte order of their paths (so every parent precedes its
children); each parent directory a layer needs is written with the tree's own
metadata for it; PAX records carry only what the entry has (long or non-ASCII
names, ``SCHILY.xattr.*``), never atime/ctime; user and group names are empty.
A hardlink group is one inode, so it lives in one layer: its first path is the
regular file and the rest are LNKTYPE members pointing at it.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterable, Sequence

from .compress import Writable
from .errors import InputError, OutputError
from .layers import LayerSpec
from .tree import ENC, ERRORS, Entry, FileTree, encode_path, parent

WHITEOUT_PREFIX = ".wh."

_TYPES: dict[str, bytes] = {
    "reg": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "sym": tarfile.SYMTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}

_COPY_BUFSIZE = 1 << 20


def link_groups(tree: FileTree) -> dict[int, list[str]]:
    """Hardlink group id -> its paths in byte order."""
    groups: dict[int, list[str]] = {}
    for path in tree.paths():
        link = tree.entries[path].link
        if link:
            groups.setdefault(link, []).append(path)
    return groups


def check_specs(tree: FileTree, specs: Sequence[LayerSpec], where: str) -> None:
    """Refuse a layer plan that would not give back exactly ``tree``.

    Every path must be in exactly one layer, hardlink groups must not be split,
    and no name may look like a whiteout (an OCI layer cannot carry one as a file).
    """
    owner: dict[str, str] = {}
    for spec in specs:
        for path in spec.paths:
            if path not in tree.entries:
                raise OutputError(f"{where}: layer {spec.name}: {_show(path)} is not in the image")
            if path in owner:
                raise OutputError(
                    f"{where}: {_show(path)} is in layers {owner[path]} and {spec.name}"
                )
            owner[path] = spec.name
    if len(owner) != len(tree.entries):
        missing = next(p for p in tree.paths() if p not in owner)
        raise OutputError(
            f"{where}: layer plan leaves out {len(tree.entries) - len(owner)} paths "
            f"(first: {_show(missing)})"
        )
    for paths in link_groups(tree).values():
        layers = {owner[p] for p in paths}
        if len(layers) > 1:
            raise OutputError(
                f"{where}: hardlink group {_show(paths[0])} is split over layers "
                + ", ".join(sorted(layers))
            )
    for path in tree.entries:
        if posixpath.basename(path).startswith(WHITEOUT_PREFIX):
            raise OutputError(
                f"{where}: {_show(path)}: a name starting with {WHITEOUT_PREFIX} "
                "cannot be stored in an OCI layer"
            )


def members(tree: FileTree, paths: Iterable[str], where: str = "") -> list[str]:
    """The layer's paths plus each parent directory they need, in byte order."""
    own = set(paths)
    need = set(own)
    seen: set[str] = set()  # ancestors whose own ancestors are checked too
    for path in own:
        # Walk up only to the first ancestor already seen: linear even for deep trees.
        anc = parent(path)
        while anc and anc not in seen:
            seen.add(anc)
            entry = tree.entries.get(anc)
            # No entry: an extractor creates the directory implicitly, as it did for the input.
            if entry is not None and anc not in own:
                if entry.kind != "dir":
                    raise OutputError(
                        f"{where or tree.label}: {_show(path)}: parent {_show(anc)} is a "
                        f"{entry.kind}, not a directory"
                    )
                need.add(anc)
            anc = parent(anc)
    return sorted(need, key=encode_path)


def _show(path: str) -> str:
    """A path printable on any terminal (undecodable bytes as backslash escapes)."""
    return "/" + path.encode(ENC, ERRORS).decode(ENC, "backslashreplace")


def tarinfo(entry: Entry, *, source_date_epoch: int | None = None) -> tarfile.TarInfo:
    """The tar header for ``entry`` (as the regular file / node itself, not a hardlink)."""
    ti = tarfile.TarInfo(entry.path)
    ti.type = _TYPES[entry.kind]
    ti.mode = entry.mode & 0o7777
    ti.uid = entry.uid
    ti.gid = entry.gid
    ti.uname = ""
    ti.gname = ""
    mtime = entry.mtime
    if source_date_epoch is not None and mtime > source_date_epoch:
        mtime = source_date_epoch
    ti.mtime = mtime
    if entry.kind == "reg":
        ti.size = entry.size
    elif entry.kind == "sym":
        ti.linkname = entry.target
    elif entry.kind in ("chr", "blk"):
        ti.devmajor = entry.devmajor
        ti.devminor = entry.devminor
    pax: dict[str, str] = {}
    for name, value in sorted(entry.xattrs):
        try:
            name.encode("utf-8", "strict")
        except UnicodeEncodeError:
            raise OutputError(f"{_show(entry.path)}: xattr name is not UTF-8") from None
        pax["SCHILY.xattr." + name] = value.decode(ENC, ERRORS)
    ti.pax_headers = pax
    return ti


def write_layer(
    tree: FileTree,
    paths: Iterable[str],
    out: Writable,
    *,
    source_date_epoch: int | None = None,
) -> int:
    """Write the layer tar holding ``paths`` (plus needed parents) to ``out``.

    Returns the number of members. ``out`` needs ``write``; the caller makes sure
    hardlink groups are whole (see :func:`check_specs`).
    """
    names = members(tree, paths)
    first_of_group: dict[int, str] = {}
    tf = tarfile.TarFile(
        fileobj=out,  # type: ignore[arg-type]
        mode="w",
        format=tarfile.PAX_FORMAT,
        encoding=ENC,
        errors=ERRORS,
        copybufsize=_COPY_BUFSIZE,
    )
    done = False
    try:
        for path in names:
            entry = tree.entries[path]
            ti = tarinfo(entry, source_date_epoch=source_date_epoch)
            if entry.link:
                first = first_of_group.get(entry.link)
                if first is not None:
                    ti.type = tarfile.LNKTYPE
                    ti.linkname = first
                    ti.size = 0
                    tf.addfile(ti)
                    continue
                first_of_group[entry.link] = path
            if entry.kind == "reg":
                with tree.open(path) as src:
                    try:
                        tf.addfile(ti, src)
                    except OSError as err:
                        if "unexpected end of data" in str(err):
                            raise InputError(
                                f"{tree.label or 'image'}: {_show(path)}: content is shorter "
                                f"than its size {entry.size}"
                            ) from None
                        raise
            else:
                tf.addfile(ti)
        done = True
    finally:
        if done:
            tf.close()  # the end-of-archive blocks; skipped after a failure
    return len(names)
