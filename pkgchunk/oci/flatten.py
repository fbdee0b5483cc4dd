"""Apply an image's layers, in order, into one FileTree (whiteouts, hardlinks, xattrs).

Each layer is an uncompressed tar on disk; members are read one at a time and
only their metadata and data offset are kept, so memory grows with the number
of files, never with their size.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import os
import tarfile
import urllib.parse
from collections.abc import Iterable

from pkgchunk.errors import InputError
from pkgchunk.oci.targuard import GuardedTarInfo, HugeHeader
from pkgchunk.tree import (
    PATH_MAX,
    DataRef,
    Entry,
    FileTree,
    Kind,
    encode_path,
    join,
    normalize,
    parent,
)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
META_PREFIX = ".wh..wh."
#: Bytes of names, link targets and pax records kept or copied per image: a global pax
#: header applies to every later member, so a small layer could otherwise fill memory.
MAX_METADATA_BYTES = 1 << 30
#: Largest device number a layer can carry (8 octal digits, as in ustar).
MAX_DEVICE = 8**7 - 1
#: mtimes beyond +-2**53 s do not survive a pax record (read back as a float).
MAX_MTIME = 1 << 53

_KINDS: dict[bytes, Kind] = {
    tarfile.REGTYPE: "reg",
    tarfile.AREGTYPE: "reg",
    tarfile.CONTTYPE: "reg",
    tarfile.GNUTYPE_SPARSE: "reg",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "sym",
    tarfile.CHRTYPE: "chr",
    tarfile.BLKTYPE: "blk",
    tarfile.FIFOTYPE: "fifo",
}


def open_tar(path: str) -> tarfile.TarFile:
    """Open an uncompressed tar for streaming reads with names kept byte-exact."""
    return tarfile.open(
        path,
        mode="r:",
        encoding="utf-8",
        errors="surrogateescape",
        tarinfo=GuardedTarInfo,
    )


def flatten(layers: Iterable[tuple[str, str]], *, label: str = "") -> FileTree:
    """Flatten ``(layer label, uncompressed tar path)`` pairs, lowest layer first."""
    state = _Flattener()
    for layer_label, tar_path in layers:
        state.apply(layer_label, tar_path)
    canonical_links(state.entries)
    return FileTree(state.entries, label=label, root=state.root,
                    warnings=tuple(state.warnings), ambiguous=tuple(state.ambiguous))


def canonical_links(entries: dict[str, Entry]) -> None:
    """Renumber hardlink groups 1.. in canonical path order; a group of one is no group.

    Two readers of the same files then give equal trees, whatever order they met them in.
    """
    groups: dict[int, list[str]] = {}
    for path, entry in entries.items():
        if entry.link:
            groups.setdefault(entry.link, []).append(path)
    ordered = sorted(groups.values(), key=lambda paths: min(map(encode_path, paths)))
    next_id = 1
    for paths in ordered:
        new = 0
        if len(paths) > 1:
            new = next_id
            next_id += 1
        for path in paths:
            if entries[path].link != new:
                entries[path] = dataclasses.replace(entries[path], link=new)


class _Flattener:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.children: dict[str, set[str]] = {}
        self.next_link = 1
        #: Paths the current layer created: whiteouts in it only hide lower layers.
        self.added: set[str] = set()
        #: Bytes of metadata charged so far (see MAX_METADATA_BYTES).
        self.metadata = 0
        #: The root's own metadata, from the last ``./`` member.
        self.root: Entry | None = None
        self.warnings: list[str] = []
        self.ambiguous: list[str] = []
        #: Symlinks of lower layers the current layer replaced by a directory -> their target.
        self.replaced: dict[str, str] = {}
        self.layer = ""

    def apply(self, label: str, tar_path: str) -> None:
        self.added = set()
        self.replaced = {}
        self.layer = label
        try:
            size = os.path.getsize(tar_path)
            if size == 0:
                return
            with open_tar(tar_path) as tf:
                while True:
                    info = tf.next()
                    tf.members.clear()  # type: ignore[attr-defined]
                    if info is None:
                        break
                    self._member(label, info, tar_path, size)
                _check_end(label, tar_path, tf.offset)
        except HugeHeader as err:
            raise InputError(f"{label}: {err}") from None
        except (tarfile.TarError, ValueError, UnicodeError, OverflowError, EOFError) as err:
            raise InputError(f"{label}: corrupt tar: {err}") from None
        except OSError as err:
            raise InputError(f"{label}: {tar_path}: {err.strerror or err}") from None

    def _member(self, label: str, info: tarfile.TarInfo, tar_path: str, size: int) -> None:
        name = info.name
        self._charge(label, info)
        for what, text in (("name", name), ("link target", info.linkname)):
            if len(text) >= PATH_MAX // 4 and len(encode_path(text)) >= PATH_MAX:
                # longer than any path Linux (or an extractor) can create
                raise InputError(
                    f"{label}: member {name[:60]!r}...: {what} of {len(encode_path(text))}"
                    f" bytes, more than {PATH_MAX - 1}"
                )
        if "\0" in name or "\0" in info.linkname:
            raise InputError(f"{label}: member {name!r} has a NUL byte in its name or link")
        path = normalize(name)
        if path is None:
            raise InputError(f"{label}: member {name!r} escapes the image root")
        base = path.rpartition("/")[2]
        if base.startswith(WHITEOUT):
            self._whiteout(label, name, path, base)
            return
        if META_PREFIX in path and any(p.startswith(META_PREFIX) for p in path.split("/")):
            return  # inside aufs bookkeeping dirs (.wh..wh.plnk/...): not image content
        if info.type == tarfile.LNKTYPE:
            self._hardlink(label, info, path)
            return
        kind = _KINDS.get(info.type)
        if kind is None:
            raise InputError(f"{label}: member {name!r} has unsupported type {info.type!r}")
        if path and self.replaced:
            self._below_link(path)
        _check_numbers(label, info, kind)
        data = None
        if kind == "reg":
            data = _data(label, info, tar_path, size)
        seconds, nanos = _mtime(info)
        entry = Entry(
            path=path,
            kind=kind,
            mode=info.mode & 0o7777,
            uid=info.uid,
            gid=info.gid,
            mtime=seconds,
            mtime_ns=nanos,
            size=info.size if kind == "reg" else 0,
            target=info.linkname if kind == "sym" else "",
            devmajor=info.devmajor if kind in ("chr", "blk") else 0,
            devminor=info.devminor if kind in ("chr", "blk") else 0,
            xattrs=_xattrs(label, info),
            data=data,
            uname=info.uname,
            gname=info.gname,
            pax=_kept_pax(info),
        )
        if not path:
            if kind != "dir":
                raise InputError(
                    f"{label}: member {name!r} names the root but is not a directory"
                )
            self.root = entry  # the root's metadata: not an entry of the tree
            return
        self._add(entry)

    def _below_link(self, path: str) -> None:
        """Warn about a member whose parent was a lower layer's symlink (see _add)."""
        for anc in _ancestors_inner_first(path):
            target = self.replaced.get(anc)
            if target is not None:
                self.ambiguous.append(path)
                self.warnings.append(
                    f"{self.layer}: {_show(path)} is below {_show(anc)}, a symlink to "
                    f"{target!r} in a lower layer: kept as overlay (podman, Docker) "
                    f"applies it ({_show(anc)} becomes a directory); umoci and containerd "
                    "follow the link instead"
                )
                return

    def _charge(self, label: str, info: tarfile.TarInfo) -> None:
        """Count the metadata this member makes us hold or copy against MAX_METADATA_BYTES."""
        cost = len(info.name) + len(info.linkname)
        cost += sum(len(k) + len(v) for k, v in info.pax_headers.items())
        self.metadata += cost
        if self.metadata > MAX_METADATA_BYTES:
            raise InputError(
                f"{label}: names, link targets and pax records exceed {MAX_METADATA_BYTES} bytes"
            )

    def _whiteout(self, label: str, name: str, path: str, base: str) -> None:
        directory = parent(path)
        if base == OPAQUE:
            if directory and (self.entries.get(directory) or _NODIR).kind != "dir":
                return
            for child in list(self.children.get(directory, ())):
                self._remove(child, keep=self.added)
            return
        if base.startswith(META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk etc.), not a whiteout
        hidden = base[len(WHITEOUT) :]
        if hidden in ("", ".", ".."):
            raise InputError(f"{label}: member {name!r} is not a valid whiteout")
        target = join(directory, hidden)
        if directory and self._link_ancestor(directory):
            # overlay extracts the layer on its own: the whiteout's parent directory is
            # created in the layer and hides the lower layer's symlink.
            self._dirs_for(path)
            self._below_link(path)
            return
        if self.replaced:
            self._below_link(path)  # below a link this layer already replaced
        if target in self.entries:
            self._remove(target, keep=self.added)

    def _hardlink(self, label: str, info: tarfile.TarInfo, path: str) -> None:
        target_path = normalize(info.linkname)
        if target_path is None:
            raise InputError(
                f"{label}: member {info.name!r} links to {info.linkname!r} outside the image root"
            )
        target = self.entries.get(target_path)
        if target is None:
            raise InputError(
                f"{label}: member {info.name!r} is a hardlink to missing path {info.linkname!r}"
            )
        if target.kind == "dir":
            raise InputError(
                f"{label}: member {info.name!r} is a hardlink to directory {info.linkname!r}"
            )
        if not path:
            raise InputError(f"{label}: member {info.name!r} names the root but is a hardlink")
        if target_path == path:
            self.added.add(path)
            return
        link = target.link
        if not link:
            link = self.next_link
            self.next_link += 1
            self.entries[target_path] = dataclasses.replace(target, link=link)
        self._add(dataclasses.replace(target, path=path, link=link))

    def _link_ancestor(self, path: str) -> bool:
        """Whether ``path`` or one of its ancestors is a symlink."""
        for anc in (*_ancestors_inner_first(path), path)[::-1]:
            entry = self.entries.get(anc)
            if entry is not None and entry.kind == "sym":
                return True
        return False

    def _dirs_for(self, path: str) -> None:
        """Make every ancestor of ``path`` a directory, as an extractor does.

        A symlink of a lower layer in the way is replaced, as overlay gives it: podman and
        Docker extract each layer into its own empty directory, so ``bin/newfile`` over a
        lower ``bin -> usr/bin`` makes a directory ``bin`` that hides the link. Every such
        replacement (and every later member below it) is warned about by _below_link.
        """
        # Every entry's ancestors are directories, so only those below the deepest existing
        # directory need work: walking up to it keeps deep trees linear.
        missing = []
        anc = parent(path)
        while anc:
            existing = self.entries.get(anc)
            if existing is not None and existing.kind == "dir":
                break
            missing.append(anc)
            anc = parent(anc)
        for anc in reversed(missing):
            old = self.entries.get(anc)
            if old is not None:
                if old.kind == "sym" and anc not in self.added:
                    self.replaced[anc] = old.target
                self._remove(anc)
            self._put(Entry(path=anc, kind="dir", mode=0o755))

    def _add(self, entry: Entry) -> None:
        path = entry.path
        replaced = len(self.replaced)
        self._dirs_for(path)
        if len(self.replaced) != replaced:
            self._below_link(path)
        existing = self.entries.get(path)
        if existing is not None and not (existing.kind == "dir" and entry.kind == "dir"):
            self._remove(path)
        self._put(entry)

    def _put(self, entry: Entry) -> None:
        self.entries[entry.path] = entry
        self.children.setdefault(parent(entry.path), set()).add(entry.path)
        self.added.add(entry.path)

    def _remove(self, path: str, keep: set[str] | None = None) -> None:
        """Drop ``path`` and its subtree, except paths in ``keep`` and their ancestors."""
        order: list[str] = []
        stack = [path]
        while stack:
            cur = stack.pop()
            order.append(cur)
            stack.extend(self.children.get(cur, ()))
        kept: set[str] = set()
        for cur in reversed(order):  # children before their parents
            if keep is not None and (cur in keep or self.children.get(cur, set()) & kept):
                kept.add(cur)
                continue
            self._drop(cur)

    def _drop(self, path: str) -> None:
        del self.entries[path]
        self.children.pop(path, None)
        siblings = self.children.get(parent(path))
        if siblings is not None:
            siblings.discard(path)


_NODIR = Entry(path="", kind="reg", mode=0)


def _show(path: str) -> str:
    return "/" + path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _ancestors_inner_first(path: str) -> list[str]:
    out = []
    anc = parent(path)
    while anc:
        out.append(anc)
        anc = parent(anc)
    return out


#: PAX records that are a header field (kept in the Entry's own fields), are read into
#: xattrs or a sparse map, or are deliberately dropped: atime/ctime change on every read,
#: inode and device numbers of the writer's disk, charset markers and comments say nothing
#: about the file.
_PAX_NOT_KEPT = frozenset({
    "path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "atime", "ctime",
    "hdrcharset", "charset", "comment", "SCHILY.dev", "SCHILY.ino", "SCHILY.nlink",
    "SCHILY.devmajor", "SCHILY.devminor", "SCHILY.filetype", "SCHILY.realsize",
})
_PAX_NOT_KEPT_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.", "GNU.sparse.")


def _kept_pax(info: tarfile.TarInfo) -> tuple[tuple[str, str], ...]:
    """The PAX records an extractor may act on that no Entry field holds (ACLs ...)."""
    if not info.pax_headers:
        return ()
    kept = [
        (k, v) for k, v in info.pax_headers.items()
        if k not in _PAX_NOT_KEPT and not k.startswith(_PAX_NOT_KEPT_PREFIXES)
    ]
    return tuple(sorted(kept))


def _mtime(info: tarfile.TarInfo) -> tuple[int, int]:
    """(seconds, nanoseconds) exactly as the PAX ``mtime`` record says (tarfile's float
    loses the last digits), else the header's whole seconds."""
    raw = info.pax_headers.get("mtime")
    if raw is not None:
        exact = parse_pax_time(raw)
        if exact is not None:
            return exact
    return math.floor(info.mtime), 0


def parse_pax_time(raw: str) -> tuple[int, int] | None:
    """A PAX time ('-1.5', '1700000000.123456789') as floored seconds and nanoseconds
    (digits beyond nanoseconds are cut, as a filesystem does); None when malformed."""
    text = raw.strip()
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in "+-" else text
    whole, _, frac = body.partition(".")
    whole = whole or ("0" if frac else "")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(whole) > 19:
        return None
    nanos = int((frac + "000000000")[:9]) if frac else 0
    seconds = int(whole)
    if sign < 0 and nanos:
        return -seconds - 1, 1_000_000_000 - nanos
    return sign * seconds, nanos


def _data(label: str, info: tarfile.TarInfo, tar_path: str, size: int) -> DataRef:
    """Where a regular member's bytes are; a sparse one's segments are checked to lie
    inside the file, in order, and to add up to the bytes stored."""
    segments = getattr(info, "sparse", None)
    if segments is None:
        if info.offset_data + info.size > size:
            raise InputError(
                f"{label}: member {info.name!r} is truncated ({info.size} bytes declared)"
            )
        return DataRef(tar_path, info.offset_data)
    kept = tuple((int(o), int(n)) for o, n in segments if n)
    end = 0
    for offset, length in kept:
        if offset < end or length < 0 or offset + length > info.size:
            raise InputError(
                f"{label}: member {info.name!r} has a malformed sparse map "
                f"(segment {offset}+{length} of a {info.size}-byte file)"
            )
        end = offset + length
    stored = sum(n for _, n in kept)
    declared = getattr(info, "sparse_stored", stored)
    if stored != declared:
        raise InputError(
            f"{label}: member {info.name!r} has a malformed sparse map "
            f"({stored} bytes of data mapped, {declared} stored)"
        )
    if info.offset_data + stored > size:
        raise InputError(
            f"{label}: member {info.name!r} is truncated ({stored} sparse bytes declared)"
        )
    return DataRef(tar_path, info.offset_data, kept)


def _check_numbers(label: str, info: tarfile.TarInfo, kind: Kind) -> None:
    """Refuse numbers no filesystem has and the writer could not give back exactly."""
    problem = ""
    if info.size < 0:
        problem = f"a negative size ({info.size})"
    elif not -MAX_MTIME <= info.mtime <= MAX_MTIME:
        problem = f"an mtime out of range ({info.mtime})"
    elif kind in ("chr", "blk") and not (
        0 <= info.devmajor <= MAX_DEVICE and 0 <= info.devminor <= MAX_DEVICE
    ):
        problem = f"device number {info.devmajor},{info.devminor} out of range"
    if problem:
        raise InputError(f"{label}: member {info.name!r} has {problem}")


def _xattrs(label: str, info: tarfile.TarInfo) -> tuple[tuple[str, bytes], ...]:
    """Extended attributes from PAX records (GNU/star ``SCHILY.xattr.``; bsdtar's too)."""
    out: dict[str, bytes] = {}
    libarchive: dict[str, bytes] = {}
    for key, value in info.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            out[key[len("SCHILY.xattr.") :]] = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr.") :], errors="surrogateescape")
            try:
                padded = value + "=" * (-len(value) % 4)
                libarchive[name] = base64.b64decode(padded.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeError):
                raise InputError(
                    f"{label}: member {info.name!r} has a malformed xattr record {key!r}"
                ) from None
    for name, raw in libarchive.items():
        out.setdefault(name, raw)
    return tuple(sorted(out.items(), key=lambda kv: encode_path(kv[0])))


def _check_end(label: str, tar_path: str, offset: int) -> None:
    """tarfile stops silently at a bad header after the first; only zeros may follow."""
    with open(tar_path, "rb") as f:
        f.seek(offset)
        block = f.read(tarfile.BLOCKSIZE)
    if block.strip(b"\0"):
        raise InputError(f"{label}: corrupt tar header at offset {offset}")
