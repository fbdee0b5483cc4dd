"""Planning only what an image adds above its base (``--keep-base``).

A derived image is its base's layers plus the layers its own build step wrote. Keeping the
base's layers byte for byte means writing, above them, exactly what the derived layers
change in the base's filesystem: the *delta* between the base flattened alone and the whole
image flattened. That is every path that is new or differs from the base (content,
metadata, kind or hardlink group), plus a whiteout for every base path that is gone.

The delta is planned by package like a whole image, against the package databases of the
final image (a derived step's packages are only listed there), and with the mtime policy of
the whole image applied to the delta's paths only: the base's files stay exactly as the
base's layers hold them. ``verify`` re-derives the same delta from the input, so it can
expect exactly that.

Pure, like the rest of ``plan/``: trees in, trees and layer specs out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from pkgchunk.image import LayerSpec
from pkgchunk.pkgdb.model import Ownership
from pkgchunk.plan import mtimes
from pkgchunk.plan.compose import PlanOutcome, mtime_record, plan_layers
from pkgchunk.plan.record import BuildRecord, MtimeRecord, base_labels, record_labels
from pkgchunk.plan.rules import Rules
from pkgchunk.tree import Entry, FileTree, ancestors, encode_path, link_sets

#: The layer holding the whiteouts when nothing else is written above the base.
WHITEOUT_LAYER = "whiteouts"


@dataclass(frozen=True)
class Delta:
    """What the layers above the base change: ``paths`` (new or changed, whole hardlink
    groups) and ``whiteouts`` (base paths deleted, or replaced by another kind of node:
    only the topmost of a deleted subtree), both in byte order."""

    paths: tuple[str, ...]
    whiteouts: tuple[str, ...]

    def without(self, drop: Callable[[str], bool]) -> Delta:
        """The delta minus the paths ``drop`` names (``--prune``, a bootc image's
        /sysroot/ostree): those are left as the base has them, neither written nor deleted."""
        return Delta(
            tuple(p for p in self.paths if not drop(p)),
            tuple(p for p in self.whiteouts if not drop(p)),
        )


def _same(a: Entry, b: Entry) -> bool:
    return dataclasses.replace(a, link=0) == dataclasses.replace(b, link=0)


def delta(base: FileTree, full: FileTree) -> Delta:
    """The delta of ``full`` over ``base`` (both flattened from the same spooled layers, so
    an untouched file has the same data location in both)."""
    links_base, links_full = link_sets(base), link_sets(full)
    changed = {
        path for path, entry in full.entries.items()
        if (old := base.entries.get(path)) is None or not _same(old, entry)
        or links_base.get(path) != links_full.get(path)
    }
    return complete(changed, base, full, links_full)


def complete(
    changed: set[str], lower: FileTree, upper: FileTree,
    links: dict[str, frozenset[str]] | None = None,
) -> Delta:
    """The delta a layer above ``lower`` needs so that the two flatten to ``upper``, from the
    paths whose entries differ (``changed``; ``links``: ``upper``'s hardlink sets): whole
    hardlink sets, every directory above them, and a whiteout for the topmost of the paths
    ``upper`` lacks or holds as another kind of node where one of the two is a directory.

    Every directory above a changed path is written, whether or not its own entry differs:
    installing into a directory moves its mtime to the install's second, so "differs" would
    depend on timing, and the layers holding such a directory would change digest from one
    build to the next."""
    links = link_sets(upper) if links is None else links
    out = set(changed)
    for path in changed:
        out.update(links.get(path, ()))  # a hardlink group is one inode: whole
    for path in list(out):
        for anc in ancestors(path):
            above = upper.entries.get(anc)
            if above is not None and above.kind == "dir":
                out.add(anc)
    gone = {
        path for path, old in lower.entries.items()
        if (now := upper.entries.get(path)) is None
        or (now.kind != old.kind and "dir" in (now.kind, old.kind))
    }
    top = [p for p in gone if not any(a in gone for a in ancestors(p))]
    return Delta(
        paths=tuple(sorted(out, key=encode_path)),
        whiteouts=tuple(sorted(top, key=encode_path)),
    )


def subtree(tree: FileTree, paths: tuple[str, ...]) -> FileTree:
    """The entries of ``paths`` alone (their parents are the base's, below)."""
    return FileTree({p: tree.entries[p] for p in paths}, label=tree.label)


def owning(ownership: Ownership, paths: tuple[str, ...]) -> Ownership:
    """The ownership of ``paths`` only: the packages that own one of them. The planner then
    groups and records only the packages the derived part holds files of."""
    owners = {p: ownership.owners[p] for p in paths if p in ownership.owners}
    keys = {k for ks in owners.values() for k in ks}
    packages = {k: v for k, v in ownership.packages.items() if k in keys}
    return dataclasses.replace(ownership, owners=owners, packages=packages)


def apply_above(
    full: FileTree, changed: Delta, ownership: Ownership, record: MtimeRecord
) -> FileTree:
    """``full`` with the mtime policy applied to the delta's paths only (the whole image's
    stable times and directory limit, so ``verify`` derives the same from the input)."""
    final = mtimes.apply(
        full, ownership, policy=record.policy, source_date_epoch=record.source_date_epoch,
        directory_epoch=record.directory_epoch,
    )
    if final is full:
        return full
    entries = dict(full.entries)
    for path in changed.paths:
        entries[path] = final.entries[path]
    return FileTree(entries, label=full.label)


@dataclass(frozen=True)
class AboveComposition:
    """A plan for the layers above ``base_layers`` kept layers: ``tree`` holds the delta's
    paths only (policy applied); the first spec carries the whiteouts."""

    tree: FileTree
    outcome: PlanOutcome
    mtime: MtimeRecord
    base_layers: int
    delta: Delta

    @property
    def labels(self) -> dict[str, str]:
        return {**record_labels(self.outcome.label, self.mtime), **base_labels(self.base_layers)}


def compose_above(
    full: FileTree,
    base: FileTree,
    base_layers: int,
    ownership: Ownership,
    rules: Rules,
    previous: BuildRecord | None = None,
    *,
    max_layers: int | None = None,
    fresh: bool = False,
    mtime_policy: mtimes.Policy = "clamp",
    source_date_epoch: int | None = None,
    drop: Callable[[str], bool] | None = None,
) -> AboveComposition:
    """Plan the delta of ``full`` over ``base`` (``ownership`` is the full image's).

    ``drop`` names paths pruned from the output: with a kept base they are pruned from the
    delta only (a bootc base keeps its ostree farm in its own layers), see
    :meth:`Delta.without` and :func:`expected_tree`."""
    record = previous or BuildRecord()
    mtime = mtime_record(full, ownership, record, mtime_policy, source_date_epoch)
    changed = delta(base, full)
    if drop is not None:
        changed = changed.without(drop)
    upper = subtree(apply_above(full, changed, ownership, mtime), changed.paths)
    outcome = plan_layers(
        upper, owning(ownership, changed.paths), rules, record.plan,
        max_layers=max_layers, fresh=fresh,
        derived="follow" if mtime_policy == "clamp" else "separate",
        warnings=record.warnings,
    )
    specs = list(outcome.layer_specs)
    if changed.whiteouts:
        # The lowest layer above the base: a path replaced by another kind of node must be
        # deleted below (or beside) its new entry, never above it.
        if specs:
            specs[0] = dataclasses.replace(specs[0], whiteouts=changed.whiteouts)
        else:
            specs = [LayerSpec(WHITEOUT_LAYER, (), whiteouts=changed.whiteouts,
                               comment=f"pkgchunk: {len(changed.whiteouts)} base paths removed")]
    outcome = dataclasses.replace(outcome, layer_specs=tuple(specs))
    return AboveComposition(upper, outcome, mtime, base_layers, changed)



def expected_tree(full: FileTree, base: FileTree, changed: Delta) -> FileTree:
    """The filesystem of an image written as ``base`` plus the delta ``changed`` (after
    :meth:`Delta.without`): the base without the whited-out subtrees, then the delta's
    entries of ``full``. With the whole delta, this holds what ``full`` holds."""
    gone = set(changed.whiteouts)
    offset = max((e.link for e in base.entries.values()), default=0)
    entries = {
        p: e for p, e in base.entries.items()
        if p not in gone and not any(a in gone for a in ancestors(p))
    }
    for path in changed.paths:
        entry = full.entries[path]
        # Link ids are per tree: keep the delta's groups apart from the base's.
        if entry.link:
            entry = dataclasses.replace(entry, link=entry.link + offset)
        entries[path] = entry
    return FileTree(entries, label=full.label)


def as_written(
    full: FileTree,
    base: FileTree,
    ownership: Ownership,
    mtime: MtimeRecord | None,
    drop: Callable[[str], bool] | None = None,
) -> FileTree:
    """What an image rechunked above ``base`` holds, derived from its input alone (for
    ``verify``): the delta, less what ``drop`` prunes, with the mtime policy ``mtime``."""
    changed = delta(base, full)
    if drop is not None:
        changed = changed.without(drop)
    final = full if mtime is None else apply_above(full, changed, ownership, mtime)
    return expected_tree(final, base, changed)
