"""Reproducible layer tars: the same tree and LayerSpec give the same bytes, always.

Members come in byte order of their paths (so every parent precedes its
children); each parent directory a layer needs is written with the tree's own
metadata for it; PAX records carry only what the entry has (long or non-ASCII
names, ``SCHILY.xattr.*``, a sub-second ``mtime``, the records the input had such as
ACLs), never atime/ctime; user and group names are the input's. When the input's
layers carried the root directory (``./``), every layer starts with it, so the root
keeps its mode, owner and xattrs whichever layer an extractor takes it from.
A hardlink group is one inode, so it lives in one layer: its first path is the
regular file and the rest are LNKTYPE members pointing at it.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections.abc import Callable, Iterable, Sequence

from pkgchunk.errors import InputError, OutputError
from pkgchunk.image import LayerSpec
from pkgchunk.oci.compress import Writable
from pkgchunk.tree import ENC, ERRORS, Entry, FileTree, encode_path, parent

WHITEOUT_PREFIX = ".wh."

_TYPES: dict[str, bytes] = {
    "reg": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "sym": tarfile.SYMTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}

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
    ti = tarfile.TarInfo(entry.path or ".")
    ti.type = _TYPES[entry.kind]
    ti.mode = entry.mode & 0o7777
    ti.uid = entry.uid
    ti.gid = entry.gid
    ti.uname = entry.uname
    ti.gname = entry.gname
    mtime, nanos = _mtime(entry, source_date_epoch)
    ti.mtime = mtime
    if entry.kind == "reg":
        ti.size = entry.size
    elif entry.kind == "sym":
        ti.linkname = entry.target
    elif entry.kind in ("chr", "blk"):
        ti.devmajor = entry.devmajor
        ti.devminor = entry.devminor
    pax: dict[str, str] = dict(entry.pax)
    if nanos:
        pax["mtime"] = pax_time(mtime, nanos)
    for name, value in sorted(entry.xattrs):
        try:
            name.encode("utf-8", "strict")
        except UnicodeEncodeError:
            raise OutputError(f"{_show(entry.path)}: xattr name is not UTF-8") from None
        pax["SCHILY.xattr." + name] = value.decode(ENC, ERRORS)
    ti.pax_headers = pax
    return ti


def _mtime(entry: Entry, source_date_epoch: int | None) -> tuple[int, int]:
    if source_date_epoch is not None and entry.mtime_exact > (source_date_epoch, 0):
        return source_date_epoch, 0
    return entry.mtime, entry.mtime_ns


def pax_time(seconds: int, nanos: int) -> str:
    """The PAX decimal form of (floored seconds, nanoseconds), trailing zeros cut."""
    if seconds < 0 and nanos:
        whole, frac = f"-{-seconds - 1}", 1_000_000_000 - nanos
    else:
        whole, frac = str(seconds), nanos
    return f"{whole}.{frac:09d}".rstrip("0")


#: Writes smaller than this are gathered before they reach the hash and the compressor.
CHUNK = 1 << 20
#: Open source files kept per layer (an OCI input has one per input layer).
_MAX_OPEN = 16
_NUL = b"\0"
_PAD = _NUL * tarfile.BLOCKSIZE


class _Coalesce:
    """Gathers the tar stream's small writes (headers, small files, padding) into ~1 MiB ones.

    sha256, zlib and zstd release the GIL only for the duration of one call: with a call per
    512-byte header, layer threads mostly wait for each other; with 1 MiB calls they run in
    parallel, and the per-call Python overhead all but disappears.
    """

    def __init__(self, out: Writable) -> None:
        self._out = out
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not self._parts and len(data) >= CHUNK:
            self._out.write(data)
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._out.write(b"".join(self._parts))
            self._parts.clear()
            self._size = 0


def _pread_to(
    fd: int, offset: int, length: int, out: _Coalesce, short: Callable[[], InputError]
) -> int:
    """Copy ``length`` bytes of ``fd`` from ``offset`` to ``out``; the offset after them.
    A source that ends early raises ``short()``."""
    while length:
        chunk = os.pread(fd, min(length, CHUNK), offset)
        if not chunk:
            raise short()
        out.write(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return offset


class _Sources:
    """Reads file contents at their offsets, keeping a few source files open.

    Every file of an OCI input lives in one of a few spooled layer tars: opening that tar
    again for each of tens of thousands of members cost more than reading them.
    """

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def copy(self, tree: FileTree, path: str, entry: Entry, out: _Coalesce) -> None:
        """Write exactly ``entry.size`` bytes of ``path``'s content to ``out``."""
        assert entry.data is not None
        fd = self._fd(entry.data.source)
        if entry.data.sparse is not None:
            self._copy_sparse(tree, path, entry, fd, out)
            return
        _pread_to(fd, entry.data.offset, entry.size, out, lambda: InputError(
            f"{tree.label or 'image'}: {_show(path)}: content is shorter than its size"
            f" {entry.size}"
        ))

    def _copy_sparse(
        self, tree: FileTree, path: str, entry: Entry, fd: int, out: _Coalesce
    ) -> None:
        """A sparse file written out whole: its segments, zeros in the holes."""
        assert entry.data is not None and entry.data.sparse is not None
        stored = entry.data.offset
        pos = 0
        for start, length in (*entry.data.sparse, (entry.size, 0)):
            while pos < start:
                n = min(start - pos, CHUNK)
                out.write(bytes(n))
                pos += n
            stored = _pread_to(fd, stored, length, out, lambda: InputError(
                f"{tree.label or 'image'}: {_show(path)}: sparse content is shorter than its map"
            ))
            pos += length

    def _fd(self, source: str) -> int:
        fd = self._fds.get(source)
        if fd is None:
            if len(self._fds) >= _MAX_OPEN:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            self._fds[source] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


#: The largest value of an 8- and a 12-byte octal ustar field.
_MAX7 = 8**7 - 1
_MAX11 = 8**11 - 1
_TYPE_BYTES = {kind: t[0] for kind, t in _TYPES.items()}


def member_header(
    entry: Entry, source_date_epoch: int | None = None, link_to: str | None = None
) -> bytes:
    """The header block(s) of ``entry`` (a hardlink to ``link_to`` when given): exactly
    what ``tarinfo(...).tobuf(PAX_FORMAT)`` gives.

    Nearly every member of a real image needs no PAX record (an ASCII name and link of at
    most 100 characters, no xattrs, numbers that fit): its 512 bytes are packed here
    directly, five times faster than through tarfile. The rest goes through tarfile.
    """
    mtime, nanos = _mtime(entry, source_date_epoch)
    kind = entry.kind
    name = (entry.path or ".") + "/" if kind == "dir" else entry.path
    if link_to is not None:
        typ, size, linkname = tarfile.LNKTYPE[0], 0, link_to
    else:
        typ = _TYPE_BYTES[kind]
        size = entry.size if kind == "reg" else 0
        linkname = entry.target if kind == "sym" else ""
    dev = kind in ("chr", "blk")
    if (
        entry.xattrs
        or entry.pax
        or nanos
        or not _short_ascii(entry.uname)
        or not _short_ascii(entry.gname)
        or len(name) > 100
        or len(linkname) > 100
        or not name.isascii()
        or not linkname.isascii()
        or not (0 <= entry.uid <= _MAX7 and 0 <= entry.gid <= _MAX7)
        or not (0 <= size <= _MAX11 and 0 <= mtime <= _MAX11)
        or (dev and not (0 <= entry.devmajor <= _MAX7 and 0 <= entry.devminor <= _MAX7))
    ):
        ti = tarinfo(entry, source_date_epoch=source_date_epoch)
        if link_to is not None:
            ti.type = tarfile.LNKTYPE
            ti.linkname = link_to
            ti.size = 0
        return ti.tobuf(tarfile.PAX_FORMAT, ENC, ERRORS)
    buf = bytearray(tarfile.BLOCKSIZE)
    raw_name = name.encode("ascii")
    buf[0 : len(raw_name)] = raw_name
    buf[100:148] = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (
        entry.mode & 0o7777, entry.uid, entry.gid, size, mtime
    )
    buf[148:156] = b"        "  # the checksum counts its own field as spaces
    buf[156] = typ
    raw_link = linkname.encode("ascii")
    buf[157 : 157 + len(raw_link)] = raw_link
    buf[257:265] = tarfile.POSIX_MAGIC
    if entry.uname:
        buf[265 : 265 + len(entry.uname)] = entry.uname.encode("ascii")
    if entry.gname:
        buf[297 : 297 + len(entry.gname)] = entry.gname.encode("ascii")
    if dev:
        buf[329:345] = b"%07o\0%07o\0" % (entry.devmajor, entry.devminor)
    buf[148:155] = b"%06o\0" % sum(buf)
    return bytes(buf)


def _short_ascii(name: str) -> bool:
    """Fits the 32-byte ustar field without a PAX record (as tarfile decides)."""
    return not name or (name.isascii() and len(name) < 32)


def whiteout_member(path: str) -> str:
    """The member name that deletes ``path`` of the layers below: ``DIR/.wh.NAME``."""
    head, _, name = path.rpartition("/")
    return f"{head}/{WHITEOUT_PREFIX}{name}" if head else WHITEOUT_PREFIX + name


#: A whiteout is an empty regular file; its metadata means nothing, so it is fixed.
_WHITEOUT_MODE = 0o644


def whiteout_header(path: str) -> bytes:
    """The header of the whiteout member deleting ``path`` (root-owned, mtime 0)."""
    return member_header(Entry(path=whiteout_member(path), kind="reg", mode=_WHITEOUT_MODE))


def write_layer(
    tree: FileTree,
    paths: Iterable[str],
    out: Writable,
    *,
    source_date_epoch: int | None = None,
    whiteouts: Iterable[str] = (),
) -> int:
    """Write the layer tar holding ``paths`` (plus needed parents) to ``out``.

    Returns the number of members. ``out`` needs ``write``; the caller makes sure
    hardlink groups are whole (see :func:`check_specs`). The bytes are exactly what
    :class:`tarfile.TarFile` (PAX format) writes for the same members: headers come from
    :meth:`tarfile.TarInfo.tobuf`, then the data padded to 512 bytes, then two zero
    blocks and zeros up to a multiple of :data:`tarfile.RECORDSIZE`.

    ``whiteouts`` are paths of the layers below that this layer deletes: each becomes a
    ``.wh.NAME`` member (their parents are in the layers below, so none is added for them).
    They come first, in byte order: an extractor applies members in order, and a path
    deleted below and written again in this layer (a directory replaced by a file) must be
    deleted before its new entry is written, whatever its name sorts like.
    """
    gone = {whiteout_member(p): p for p in whiteouts}
    names = [*sorted(gone, key=encode_path), *members(tree, paths)]
    first_of_group: dict[int, str] = {}
    sink = _Coalesce(out)
    sources = _Sources()
    offset = 0
    try:
        if tree.root is not None:
            header = member_header(tree.root, source_date_epoch)
            sink.write(header)
            offset += len(header)
        for path in names:
            if path in gone:
                header = whiteout_header(gone[path])
                sink.write(header)
                offset += len(header)
                continue
            entry = tree.entries[path]
            has_data = entry.kind == "reg"
            link_to = None
            if entry.link:
                link_to = first_of_group.get(entry.link)
                if link_to is not None:
                    has_data = False
                else:
                    first_of_group[entry.link] = path
            header = member_header(entry, source_date_epoch, link_to)
            sink.write(header)
            offset += len(header)
            if has_data:
                if entry.data is None:
                    tree.open(path).close()  # raises the reader's error for this entry
                sources.copy(tree, path, entry, sink)
                blocks, remainder = divmod(entry.size, tarfile.BLOCKSIZE)
                if remainder:
                    sink.write(_PAD[remainder:])
                    blocks += 1
                offset += blocks * tarfile.BLOCKSIZE
        # The end of the archive, as TarFile.close() writes it (a failure skips it).
        sink.write(_PAD * 2)
        offset += 2 * tarfile.BLOCKSIZE
        remainder = offset % tarfile.RECORDSIZE
        if remainder:
            sink.write(_NUL * (tarfile.RECORDSIZE - remainder))
        sink.flush()
    finally:
        sources.close()
    return len(names)
