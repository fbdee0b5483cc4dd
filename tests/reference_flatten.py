"""An independent reference flattener: what an image's layers mean, written to be obviously
correct rather than fast, on nothing but Python's tarfile.

It shares no code with pkgchunk/oci/flatten.py (nor with its tar guard), so a reader bug
there cannot pass unseen into both sides of ``verify``. Per layer (OCI image spec,
"Applying changesets", with overlay's answer where runtimes differ):

1. whiteouts first: ``.wh..wh..opq`` empties its directory of what lower layers put there,
   ``.wh.NAME`` removes NAME and everything below it; both touch lower layers only.
2. then every other member, in order: missing parents become directories (0755, 0:0, mtime
   0); any non-directory parent (a lower layer's symlink too: overlay extracts each layer on
   its own) is replaced by a directory; a directory over a directory replaces its metadata
   and keeps its children; anything else replaces the path and its subtree.

Content is a sha256 of what tarfile's ``extractfile`` reads (sparse members included).
mtimes are exact nanoseconds from the PAX record (Decimal), else the header's seconds.
"""

from __future__ import annotations

import hashlib
import math
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

#: PAX keywords that are a header field, an xattr, sparse bookkeeping, or dropped on purpose
#: (atime/ctime, the writer's inode numbers, comments and charset markers).
HEADER_KEYWORDS = {
    "path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "atime", "ctime",
    "hdrcharset", "charset", "comment", "SCHILY.dev", "SCHILY.ino", "SCHILY.nlink",
    "SCHILY.devmajor", "SCHILY.devminor", "SCHILY.filetype", "SCHILY.realsize",
}
NOT_KEPT_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.", "GNU.sparse.")

KINDS = {
    tarfile.REGTYPE: "reg", tarfile.AREGTYPE: "reg", tarfile.CONTTYPE: "reg",
    tarfile.GNUTYPE_SPARSE: "reg", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "sym",
    tarfile.CHRTYPE: "chr", tarfile.BLKTYPE: "blk", tarfile.FIFOTYPE: "fifo",
}


@dataclass(frozen=True)
class RefEntry:
    """One path, with everything a layer can say about it (content as a sha256)."""

    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    uname: str = ""
    gname: str = ""
    size: int = 0
    sha256: str = ""
    target: str = ""
    device: tuple[int, int] = (0, 0)
    xattrs: tuple[tuple[str, bytes], ...] = ()
    pax: tuple[tuple[str, str], ...] = ()


@dataclass
class RefTree:
    entries: dict[str, RefEntry] = field(default_factory=dict)
    #: Hardlink groups as sets of paths (only groups of two or more).
    links: set[frozenset[str]] = field(default_factory=set)
    root: RefEntry | None = None


def clean(name: str) -> str:
    """A member name as a path below the root ('' for the root itself)."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            assert parts, f"{name!r} escapes the root"
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def exact_mtime(info: tarfile.TarInfo) -> int:
    raw = info.pax_headers.get("mtime")
    if raw is not None:
        try:
            value = Decimal(raw)
        except InvalidOperation:
            value = None  # tarfile's reading of a malformed record stands
        if value is not None and value.is_finite():
            return int((value * 10**9).to_integral_value(rounding=ROUND_FLOOR))
    return math.floor(info.mtime) * 10**9


def xattrs(info: tarfile.TarInfo) -> tuple[tuple[str, bytes], ...]:
    import base64
    import urllib.parse

    out: dict[str, bytes] = {}
    for key, value in info.pax_headers.items():
        if key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr."):], errors="surrogateescape")
            out.setdefault(name, base64.b64decode(value + "=" * (-len(value) % 4)))
    for key, value in info.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            out[key[len("SCHILY.xattr."):]] = value.encode("utf-8", "surrogateescape")
    return tuple(sorted(out.items()))


def kept_pax(info: tarfile.TarInfo) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(
        (k, v) for k, v in info.pax_headers.items()
        if k not in HEADER_KEYWORDS and not k.startswith(NOT_KEPT_PREFIXES)
    ))


def digest(tf: tarfile.TarFile, info: tarfile.TarInfo) -> str:
    h = hashlib.sha256()
    f = tf.extractfile(info)
    assert f is not None
    while chunk := f.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def entry_of(tf: tarfile.TarFile, info: tarfile.TarInfo) -> RefEntry:
    kind = KINDS[info.type]
    return RefEntry(
        kind=kind, mode=info.mode & 0o7777, uid=info.uid, gid=info.gid,
        mtime_ns=exact_mtime(info), uname=info.uname, gname=info.gname,
        size=info.size if kind == "reg" else 0,
        sha256=digest(tf, info) if kind == "reg" else "",
        target=info.linkname if kind == "sym" else "",
        device=(info.devmajor, info.devminor) if kind in ("chr", "blk") else (0, 0),
        xattrs=xattrs(info), pax=kept_pax(info),
    )


def below(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def reference_flatten(layer_tars: Iterable[str]) -> RefTree:
    """Apply uncompressed layer tars, lowest first."""
    tree = RefTree()
    inode: dict[str, int] = {}  # path -> inode number (hardlinks share one)
    next_inode = 0
    for tar_path in layer_tars:
        if os.path.getsize(tar_path) == 0:
            continue  # an empty file is an empty layer
        with tarfile.open(tar_path, "r:", encoding="utf-8", errors="surrogateescape") as tf:
            members = tf.getmembers()
            lower = set(tree.entries)
            for info in members:  # 1. whiteouts, against the lower layers only
                path = clean(info.name)
                base = path.rpartition("/")[2]
                directory = path.rpartition("/")[0]
                if base == ".wh..wh..opq":
                    for p in [p for p in lower if directory == "" or p.startswith(directory + "/")]:
                        if p != directory:
                            tree.entries.pop(p, None)
                elif base.startswith(".wh.") and not base.startswith(".wh..wh."):
                    hidden = (directory + "/" if directory else "") + base[4:]
                    for p in [p for p in lower if below(p, hidden)]:
                        tree.entries.pop(p, None)
            for info in members:  # 2. everything else
                path = clean(info.name)
                base = path.rpartition("/")[2]
                if base.startswith(".wh."):
                    if not base.startswith(".wh..wh.") and _link_in(tree, path.rpartition("/")[0]):
                        _make_parents(tree, path)  # overlay: the whiteout's parent is a dir
                    continue
                if any(part.startswith(".wh..wh.") for part in path.split("/")):
                    continue  # aufs bookkeeping (.wh..wh.plnk/...), not image content
                if path == "":
                    tree.root = entry_of(tf, info)
                    continue
                _make_parents(tree, path)
                if info.type == tarfile.LNKTYPE:
                    target = clean(info.linkname)
                    if target == path:
                        continue
                    new = tree.entries[target]
                    number = inode[target]
                else:
                    new = entry_of(tf, info)
                    next_inode += 1
                    number = next_inode
                old = tree.entries.get(path)
                if old is not None and not (old.kind == "dir" and new.kind == "dir"):
                    for p in [p for p in tree.entries if below(p, path)]:
                        del tree.entries[p]
                tree.entries[path] = new
                inode[path] = number
    groups: dict[int, set[str]] = {}
    for path, entry in tree.entries.items():
        if entry.kind != "dir":  # directories are never hardlinked (and made ones have none)
            groups.setdefault(inode[path], set()).add(path)
    tree.links = {frozenset(g) for g in groups.values() if len(g) > 1}
    return tree


def _link_in(tree: RefTree, directory: str) -> bool:
    parts = directory.split("/") if directory else []
    return any(
        (e := tree.entries.get("/".join(parts[:i]))) is not None and e.kind == "sym"
        for i in range(1, len(parts) + 1)
    )


def _make_parents(tree: RefTree, path: str) -> None:
    # Every entry's ancestors are directories, so walking up to the first directory finds
    # every ancestor that needs work (and keeps a 2000-deep tree from taking cubic time).
    todo = []
    anc = path.rpartition("/")[0]
    while anc:
        existing = tree.entries.get(anc)
        if existing is not None and existing.kind == "dir":
            break
        todo.append(anc)
        anc = anc.rpartition("/")[0]
    for anc in reversed(todo):
        old = tree.entries.get(anc)
        if old is not None:
            for p in [p for p in tree.entries if below(p, anc)]:
                del tree.entries[p]
        tree.entries[anc] = RefEntry(kind="dir", mode=0o755, uid=0, gid=0, mtime_ns=0)


def from_production(tree: object) -> RefTree:
    """pkgchunk's FileTree in the reference's terms (content hashed through tree.open)."""
    from pkgchunk.tree import Entry, FileTree

    assert isinstance(tree, FileTree)

    def conv(e: Entry, sha: str) -> RefEntry:
        return RefEntry(
            kind=e.kind, mode=e.mode, uid=e.uid, gid=e.gid,
            mtime_ns=e.mtime * 10**9 + e.mtime_ns, uname=e.uname, gname=e.gname,
            size=e.size, sha256=sha, target=e.target, device=(e.devmajor, e.devminor),
            xattrs=tuple(sorted(e.xattrs)), pax=tuple(sorted(e.pax)),
        )

    out = RefTree()
    groups: dict[int, set[str]] = {}
    for path, e in tree.entries.items():
        sha = ""
        if e.kind == "reg":
            h = hashlib.sha256()
            with tree.open(path) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            sha = h.hexdigest()
        out.entries[path] = conv(e, sha)
        if e.link:
            groups.setdefault(e.link, set()).add(path)
    out.links = {frozenset(g) for g in groups.values() if len(g) > 1}
    out.root = conv(tree.root, "") if tree.root is not None else None
    return out


def differences(expected: RefTree, got: RefTree, limit: int = 10) -> list[str]:
    """What differs, one line per path (empty when equal)."""
    out = []
    for path in sorted(set(expected.entries) | set(got.entries)):
        a, b = expected.entries.get(path), got.entries.get(path)
        if a != b:
            out.append(f"/{path}: reference {a} != production {b}")
        if len(out) >= limit:
            return out
    if expected.root != got.root:
        out.append(f"root: reference {expected.root} != production {got.root}")
    if expected.links != got.links:
        out.append(f"hardlinks: reference {sorted(map(sorted, expected.links))} != "
                   f"production {sorted(map(sorted, got.links))}")
    return out
