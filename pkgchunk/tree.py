"""The flattened filesystem of an image: the one structure every stage reads.

Paths are relative, '/'-separated, normalised (no '.', '..', empty or leading '/'
components) and the root itself is not an entry. Names that are not valid UTF-8
are kept byte for byte as str with surrogateescape (``os.fsdecode`` style), so
``path.encode("utf-8", "surrogateescape")`` gives the original bytes back.

Content is never held in memory: a regular file's ``data`` says which file on
disk (a spooled uncompressed layer, or the real file of a ``rootfs:`` input)
holds its bytes and at which offset.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Literal, Self

from pkgchunk.errors import InputError

Kind = Literal["reg", "dir", "sym", "chr", "blk", "fifo"]
KINDS: tuple[Kind, ...] = ("reg", "dir", "sym", "chr", "blk", "fifo")

ENC = "utf-8"
ERRORS = "surrogateescape"

#: Symlink hops allowed while resolving a path inside the tree (Linux uses 40).
MAX_SYMLINK_HOPS = 40
#: Paths and symlink targets this long do not resolve (Linux: ENAMETOOLONG); this also
#: bounds the work of one :meth:`FileTree.resolve` whatever the links say.
PATH_MAX = 4096


def encode_path(path: str) -> bytes:
    """The original bytes of a tree path."""
    return path.encode(ENC, ERRORS)


def decode_path(raw: bytes) -> str:
    return raw.decode(ENC, ERRORS)


@dataclass(frozen=True, slots=True)
class DataRef:
    """Where a regular file's bytes live: ``size`` bytes at ``offset`` of the file ``source``."""

    source: str
    offset: int = 0
    #: A sparse file's data segments ``(offset in the file, length)``, in order: the
    #: source holds them back to back at ``offset`` and everything else reads as zeros.
    sparse: tuple[tuple[int, int], ...] | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of the flattened filesystem with the metadata OCI layers carry.

    ``link`` is a hardlink group id: regular files with the same non-zero ``link``
    are one inode (they share ``data``). ``mode`` holds permission bits only
    (``0o7777``); the type is ``kind``. ``mtime`` is whole seconds (floored) and
    ``mtime_ns`` the nanoseconds after them, so a PAX ``mtime`` record survives exactly.
    ``uname``/``gname`` are the names the layer gave, ``pax`` the PAX records an extractor
    may act on (ACLs as GNU tar ``--acls`` writes them ...) that have no field of their own.
    """

    path: str
    kind: Kind
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    target: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()
    data: DataRef | None = None
    link: int = 0
    mtime_ns: int = 0
    uname: str = ""
    gname: str = ""
    pax: tuple[tuple[str, str], ...] = ()

    @property
    def mtime_exact(self) -> tuple[int, int]:
        """(seconds, nanoseconds): what mtime comparisons use."""
        return (self.mtime, self.mtime_ns)


def normalize(path: str) -> str | None:
    """Normalise a member name to a tree path; None when it escapes the root.

    Absolute names are taken relative to the root ('/etc' -> 'etc'); '..' that
    would climb above the root makes the name hostile.
    """
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def parent(path: str) -> str:
    """Parent path ('' for a top-level entry)."""
    return path.rpartition("/")[0]


def ancestors(path: str) -> Iterator[str]:
    """Proper ancestors of ``path``, outermost first, excluding the root ''."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


@dataclass
class FileTree:
    """Path -> Entry of a flattened image; content is read through :meth:`open`.

    ``label`` names where the tree came from (for error messages).
    """

    entries: dict[str, Entry] = field(default_factory=dict)
    label: str = ""
    #: The root directory's own metadata when a layer carried a ``./`` member (path '').
    root: Entry | None = None
    #: What the reader had to decide for itself (one line each, naming the path).
    warnings: tuple[str, ...] = ()
    #: Paths whose meaning runtimes disagree on (added below a lower layer's symlink):
    #: the tree holds them as overlay applies them; ``verify`` reports each.
    ambiguous: tuple[str, ...] = ()

    def derive(self, entries: dict[str, Entry], root: Entry | None = None) -> FileTree:
        """The same tree with other entries (and root), keeping what the reader noted."""
        return FileTree(
            entries, self.label, self.root if root is None else root, self.warnings,
            self.ambiguous,
        )

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, path: object) -> bool:
        return path in self.entries

    def get(self, path: str) -> Entry | None:
        return self.entries.get(path)

    def paths(self) -> list[str]:
        """All paths in the canonical (byte-wise) order every writer uses."""
        return sorted(self.entries, key=encode_path)

    def children(self) -> Mapping[str, list[str]]:
        """Directory -> direct child paths (built on demand; '' is the root)."""
        out: dict[str, list[str]] = {}
        for p in self.entries:
            out.setdefault(parent(p), []).append(p)
        return out

    def open(self, path: str) -> BinaryIO:
        """A stream of a regular file's bytes (caller closes)."""
        entry = self.entries.get(path)
        if entry is None or entry.kind != "reg" or entry.data is None:
            raise InputError(f"{self.label or 'image'}: {path}: not a regular file")
        return open_data(entry)

    def resolve(self, path: str, *, follow_last: bool = True) -> str | None:
        """Resolve ``path`` through the tree's own symlinks, never the host's.

        Returns the tree path it names, or None where Linux would fail (missing, a loop of
        links, a non-directory with more path after it, PATH_MAX long). '..' is taken
        after the links before it, like the kernel does, and stops at the root, like
        chroot. A trailing '/' asks for a directory. The work is bounded by PATH_MAX and
        MAX_SYMLINK_HOPS whatever the links say.
        """
        if len(path) >= PATH_MAX:
            return None
        todo = _components(path)  # a stack: next name last
        done = ""
        hops = 0
        while todo:
            name = todo.pop()
            if name == ".":
                continue
            if name == "..":
                done = parent(done)
                continue
            cur = f"{done}/{name}" if done else name
            entry = self.entries.get(cur)
            if entry is None or len(cur) >= PATH_MAX:
                return None
            if entry.kind == "sym" and (todo or follow_last):
                hops += 1
                target = entry.target
                if hops > MAX_SYMLINK_HOPS or not target or len(target) >= PATH_MAX:
                    return None
                if target.startswith("/"):
                    done = ""
                todo.extend(_components(target))
                continue
            if todo and entry.kind != "dir":
                return None  # ENOTDIR
            done = cur
        return done


def _components(path: str) -> list[str]:
    """The names of ``path`` last to first; a trailing '/' becomes '.' (a directory)."""
    names = [p for p in reversed(path.split("/")) if p]
    if names and path.endswith("/"):
        names.insert(0, ".")
    return names


class _Reader:
    """What the content readers share: a readable file object that owns ``_f``."""

    _f: BinaryIO

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Window(_Reader):
    """A read-only view of ``size`` bytes at ``offset`` of an open file."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self._f = f
        self._start = offset
        self._left = size
        f.seek(offset)

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if n < 0 or n > self._left:
            n = self._left
        chunk = self._f.read(n)
        self._left -= len(chunk)
        return chunk


class _Sparse(_Reader):
    """A sparse file's bytes: its data segments from the source, zeros in between."""

    def __init__(self, f: BinaryIO, data: DataRef, size: int) -> None:
        self._f = f
        self._segments = list(data.sparse or ())
        self._pos = 0  # position in the file
        self._stored = data.offset  # where the next segment starts in the source
        self._size = size

    def read(self, n: int = -1) -> bytes:
        if self._pos >= self._size:
            return b""
        if n < 0:
            n = self._size - self._pos
        n = min(n, self._size - self._pos)
        while self._segments and self._segments[0][0] + self._segments[0][1] <= self._pos:
            self._stored += self._segments.pop(0)[1]
        if not self._segments or self._segments[0][0] > self._pos:
            nxt = self._segments[0][0] if self._segments else self._size
            chunk = bytes(min(n, nxt - self._pos))
        else:
            start, length = self._segments[0]
            skip = self._pos - start
            self._f.seek(self._stored + skip)
            chunk = self._f.read(min(n, length - skip))
            if not chunk:
                raise InputError(f"{self._f.name}: sparse data shorter than its map")
        self._pos += len(chunk)
        return chunk


def open_data(entry: Entry) -> BinaryIO:
    """Open the bytes of a regular file entry (a window into its source file)."""
    assert entry.data is not None
    f = open(entry.data.source, "rb")  # noqa: SIM115 - handed to the caller
    if entry.data.sparse is not None:
        return _Sparse(f, entry.data, entry.size)  # type: ignore[return-value]
    return _Window(f, entry.data.offset, entry.size)  # type: ignore[return-value]


def join(base: str, name: str) -> str:
    return posixpath.join(base, name) if base else name


def link_sets(tree: FileTree) -> dict[str, frozenset[str]]:
    """path -> every path of its hardlink group (group ids are labels private to one tree,
    so two trees' groups compare by their paths)."""
    by_id: dict[int, set[str]] = {}
    for path, entry in tree.entries.items():
        if entry.link:
            by_id.setdefault(entry.link, set()).add(path)
    return {p: frozenset(paths) for paths in by_id.values() for p in paths}


class ContentHasher:
    """sha256 (hex) of regular files, once per data location (hardlinks share theirs).

    Shared by carry-forward and ``verify``: both compare contents of two trees."""

    def __init__(self, tree: FileTree) -> None:
        self._tree = tree
        self._cache: dict[tuple[str, int, int], str] = {}

    def digest(self, entry: Entry) -> str:
        assert entry.data is not None
        key = (entry.data.source, entry.data.offset, entry.size)
        got = self._cache.get(key)
        if got is None:
            h = hashlib.sha256()
            with self._tree.open(entry.path) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            got = self._cache[key] = h.hexdigest()
        return got
