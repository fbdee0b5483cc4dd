"""Leave trees out of a FileTree (``--prune``), and what that does to hard links.

A prefix names a path and everything below it (``sysroot/ostree``); with a trailing
'/' (``sysroot/``) the directory itself stays and only what is below it goes, as
chunkah's ``--prune /sysroot/`` does. Prefixes are recorded as written (with a
leading '/'), so ``verify`` can tell a pruned path from a lost one.

Hard links are recomputed from what is left: a file whose only other name was pruned
is a plain file again. A link set that reached into a pruned tree was usually made by
the pruned tree itself (ostree's object store links every /usr file to its object and
deduplicates identical objects, so unrelated packages share inodes); such sets are
returned in :attr:`Pruned.loose` so planning can split them by owner
(:func:`split_links`) instead of gluing unrelated packages into one layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Container, Hashable, Iterable, Mapping
from dataclasses import dataclass

from pkgchunk.errors import InputError
from pkgchunk.oci.flatten import canonical_links
from pkgchunk.tree import Entry, FileTree, normalize


@dataclass(frozen=True, slots=True)
class Prefix:
    """A pruned tree: ``path`` (tree path) and whether the directory itself stays."""

    path: str
    keep_dir: bool = False

    def __str__(self) -> str:
        return "/" + self.path + ("/" if self.keep_dir else "")

    def matches(self, path: str) -> bool:
        if path.startswith(self.path + "/"):
            return True
        return path == self.path and not self.keep_dir


def parse_prefix(text: str) -> Prefix:
    """``/sysroot/ostree`` or ``sysroot/`` as a Prefix; InputError for the root or '..'."""
    norm = normalize(text)
    if norm is None or ".." in text.split("/"):
        raise InputError(f"--prune {text!r}: a path inside the image, without '..'")
    if not norm:
        raise InputError(f"--prune {text!r}: would leave out the whole image")
    return Prefix(norm, keep_dir=text.endswith("/"))


@dataclass(frozen=True)
class Pruned:
    """The tree without the pruned paths; per prefix how many paths went; and the hard
    link ids (of the new tree) whose sets reached into a pruned tree."""

    tree: FileTree
    counts: tuple[tuple[Prefix, int], ...]
    loose: frozenset[int]

    @property
    def removed(self) -> int:
        return sum(n for _, n in self.counts)


def prune(
    tree: FileTree, prefixes: Iterable[Prefix], keep: Container[str] = frozenset()
) -> Pruned:
    """A new tree without every path a prefix matches, except those in ``keep`` (a kept
    base's paths); the input tree is not changed."""
    wanted = list(dict.fromkeys(prefixes))
    if not wanted:
        return Pruned(tree, (), frozenset())
    counts = dict.fromkeys(wanted, 0)
    kept: dict[str, Entry] = {}
    touched: set[int] = set()
    for path, entry in tree.entries.items():
        hit = next((p for p in wanted if p.matches(path)), None)
        if hit is None or path in keep:
            kept[path] = entry
            continue
        counts[hit] += 1
        if entry.link:
            touched.add(entry.link)
    if not touched and len(kept) == len(tree.entries):
        return Pruned(tree, tuple(counts.items()), frozenset())
    # One surviving name per touched set, to find the set again after renumbering.
    witness: dict[int, str] = {}
    for path, entry in kept.items():
        if entry.link in touched:
            witness.setdefault(entry.link, path)
    canonical_links(kept)
    loose = frozenset(kept[p].link for p in witness.values() if kept[p].link)
    return Pruned(FileTree(kept, label=tree.label), tuple(counts.items()), loose)


def split_links(
    tree: FileTree, loose: frozenset[int], key: Callable[[str], Hashable | None]
) -> FileTree:
    """Split each loose link set by ``key(path)``: names with equal keys stay one inode,
    a name whose key is None becomes a plain file. Other links are untouched."""
    if not loose:
        return tree
    entries = dict(tree.entries)
    fresh = max((e.link for e in entries.values()), default=0) + 1
    ids: dict[tuple[int, Hashable], int] = {}
    for path in tree.paths():
        entry = entries[path]
        if entry.link not in loose:
            continue
        k = key(path)
        new = 0 if k is None else ids.setdefault((entry.link, k), fresh + len(ids))
        entries[path] = dataclasses.replace(entry, link=new)
    canonical_links(entries)
    return FileTree(entries, label=tree.label)


def owner_key(owners: Mapping[str, Iterable[str]]) -> Callable[[str], Hashable | None]:
    """The key :func:`split_links` uses: the set of packages owning a path (None: unowned)."""

    def key(path: str) -> Hashable | None:
        found = owners.get(path)
        return tuple(sorted(found)) if found else None

    return key
