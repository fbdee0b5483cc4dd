"""Carry unchanged entries forward: the previous build's mtime for an entry identical to last time.

An upgraded package's unchanged files come out of the new package with the new package's
mtimes, so under the clamp policy alone their tar headers change and their layer is pulled
again although no byte of content changed (design-notes §4, "the metadata floor"). When a
path's type, mode, owner, xattrs, link target, device numbers and content equal the previous
build's entry, and the previous build's mtime is older than what the policy gives now, the
entry gets the previous build's mtime: its tar entry is then byte for byte what it was, and
mtimes still only move backwards.

Pure: the caller reads the previous build's entries (only the layers :func:`layers_to_read`
names) and hashes the few new files :func:`candidates` asks for; this module decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from pkgchunk.image import LayerSpec
from pkgchunk.plan.groups import Group
from pkgchunk.plan.planner import PreviousPlan
from pkgchunk.tree import Entry, FileTree, ancestors


@dataclass(frozen=True, slots=True)
class Identity:
    """Everything of an entry a tar header and its payload carry, except the mtime.

    ``digest`` is the sha256 (hex) of a regular file's content, '' for other kinds.
    Hardlink membership is not part of it: it decides which member carries the data, not
    what any path holds."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    target: str
    devmajor: int
    devminor: int
    xattrs: tuple[tuple[str, bytes], ...]
    digest: str = ""


@dataclass(frozen=True, slots=True)
class PrevEntry:
    """One entry of the previous build: what it held and the mtime it was written with."""

    identity: Identity
    mtime: int


@dataclass(frozen=True)
class Carried:
    """The tree with carried mtimes, and which paths were carried."""

    tree: FileTree
    paths: frozenset[str]


def identity(entry: Entry, digest: str = "") -> Identity:
    """``entry``'s identity; ``digest`` is its content's sha256 (regular files)."""
    return Identity(
        kind=entry.kind,
        mode=entry.mode & 0o7777,
        uid=entry.uid,
        gid=entry.gid,
        size=entry.size if entry.kind == "reg" else 0,
        target=entry.target if entry.kind == "sym" else "",
        devmajor=entry.devmajor if entry.kind in ("chr", "blk") else 0,
        devminor=entry.devminor if entry.kind in ("chr", "blk") else 0,
        xattrs=tuple(sorted(entry.xattrs)),
        digest=digest if entry.kind == "reg" else "",
    )


def _meta_equal(entry: Entry, prev: PrevEntry) -> bool:
    """Equal but for the content digest (known only once the file is hashed)."""
    mine = identity(entry, prev.identity.digest)
    return mine == prev.identity


def candidates(tree: FileTree, previous: Mapping[str, PrevEntry]) -> list[str]:
    """Regular files whose content must be hashed to decide: every other attribute equals
    the previous entry's and the previous mtime is older. Hashing only these keeps the
    cost to the files that can gain from it."""
    out = []
    for path, entry in tree.entries.items():
        prev = previous.get(path)
        if (
            prev is not None
            and entry.kind == "reg"
            and prev.mtime < entry.mtime
            and _meta_equal(entry, prev)
        ):
            out.append(path)
    return out


def carry(
    tree: FileTree, previous: Mapping[str, PrevEntry], digests: Mapping[str, str]
) -> Carried:
    """The tree with each entry identical to the previous build's given that build's mtime,
    when older (``digests``: sha256 of the files :func:`candidates` named).

    A hardlink set is one inode with one mtime: it is carried only when every path of it
    carries the same value, so every path's new mtime is its own previous entry's."""
    value: dict[str, int] = {}
    for path, entry in tree.entries.items():
        prev = previous.get(path)
        if prev is None or prev.mtime >= entry.mtime:
            continue
        digest = digests.get(path, "") if entry.kind == "reg" else ""
        if entry.kind == "reg" and not digest:
            continue
        if identity(entry, digest) == prev.identity:
            value[path] = prev.mtime
    links: dict[int, list[str]] = {}
    for path, entry in tree.entries.items():
        if entry.link:
            links.setdefault(entry.link, []).append(path)
    for members in links.values():
        values = {value.get(p) for p in members}
        if len(values) != 1:
            for p in members:
                value.pop(p, None)
    if not value:
        return Carried(tree, frozenset())
    entries = dict(tree.entries)
    for path, mtime in value.items():
        entries[path] = dataclasses.replace(entries[path], mtime=mtime)
    return Carried(FileTree(entries=entries, label=tree.label), frozenset(value))


def allowed(mtime: int, policy_mtime: int, current: Identity, prev: PrevEntry | None) -> bool:
    """Whether ``mtime`` is one the policy can give an entry whose policy value is
    ``policy_mtime``: that value itself, or an older one the named previous build holds
    for an identical entry (what ``verify`` checks)."""
    if mtime == policy_mtime:
        return True
    return (
        prev is not None and mtime < policy_mtime and prev.mtime == mtime
        and prev.identity == current
    )


#: Group kinds whose mtimes do not follow a package version (unowned files keep the build's
#: wall-clock time without SOURCE_DATE_EPOCH; the package databases change with any update).
_UNSETTLED_KINDS = ("bucket", "bigfile", "pkgdb")


def layers_to_read(
    previous: PreviousPlan, groups: Sequence[Group], carried: Collection[int] = ()
) -> tuple[int, ...]:
    """Indices of the previous build's layers that can hold an entry worth carrying.

    A package group whose version did not change gets the same mtimes from the policy as
    last time, so its previous entries cannot be older than the policy's: only layers
    holding a group that changed version or is gone, a group whose mtimes do not follow a
    version (unowned buckets, big unowned files, package databases), or entries the
    previous build itself carried (``carried``, from its record) need reading."""
    now = {g.key: g for g in groups}
    out = []
    for i, layer in enumerate(previous.layers):
        if i in carried:
            out.append(i)
            continue
        for key in layer.groups:
            group = now.get(key)
            old = previous.history.get(key)
            if (
                group is None
                or group.kind in _UNSETTLED_KINDS
                or old is None
                or old.version != group.version
            ):
                out.append(i)
                break
    return tuple(out)


def carried_layers(specs: Sequence[LayerSpec], carried: Collection[str]) -> tuple[int, ...]:
    """Indices of the layers that hold a carried entry, their own or a parent directory
    the writer adds: the next build must read those again to keep them."""
    if not carried:
        return ()
    out = []
    for i, spec in enumerate(specs):
        if any(p in carried or any(a in carried for a in ancestors(p)) for p in spec.paths):
            out.append(i)
    return tuple(out)
