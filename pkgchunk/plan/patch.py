"""Patch layers: keep every layer of the previous build and add only what changed on top.

Package layers stop at the package: an upgraded package's layer is pulled whole, although
most of its files (perl's modules, python's stdlib, a server's data) did not change. With
unchanged entries carried forward (``plan/carry.py``) those files are byte-identical to last
time, so the exact difference between the previous build's filesystem and this one is the
content floor, plus the directories above it and the package databases. A *patch build*
writes the previous build's layers as they are (same blobs, same digests) and that
difference as one layer above them, whiteouts included. A client that holds the previous
build pulls the patch alone, and Docker's classic store (which reuses a common prefix of
layers) pulls the same.

The price is storage: a patched file is held twice (its old copy stays below), and every
patch takes a layer. So patches are bounded: at most ``patch_layers`` of them (the planner
leaves that many of ``--max-layers`` free), and their files together at most
:data:`MAX_PATCH_SHARE` of the image's bytes. The build after that plans every layer again
against the previous plan, and the package layers that did not change keep their digests.

Pure: the caller reads the previous build and hashes the files :func:`to_hash` names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from pkgchunk.plan.above import Delta, complete
from pkgchunk.plan.groups import Group
from pkgchunk.plan.planner import Plan, PlannedLayer, PreviousPlan
from pkgchunk.plan.record import PatchRecord, encode
from pkgchunk.tree import Entry, FileTree, link_sets

#: The patches' files may hold at most this share of the image's file bytes: beyond it the
#: old copies they hide cost more storage than a fresh plan costs pull.
MAX_PATCH_SHARE = 0.5

#: The layer name (and annotation) of patch N.
PATCH_NAME = "patch/{n}"


def _meta(entry: Entry) -> Entry:
    """Everything a tar header carries, without where the content lives."""
    return dataclasses.replace(entry, data=None, link=0)


def to_hash(new: FileTree, old: FileTree) -> list[str]:
    """Regular files whose every header field equals the previous build's: only their
    content can tell whether they changed."""
    out = []
    for path, entry in new.entries.items():
        prev = old.entries.get(path)
        if (entry.kind == "reg" and prev is not None and prev.kind == "reg"
                and _meta(entry) == _meta(prev)):
            out.append(path)
    return out


def delta(new: FileTree, old: FileTree, same_content: Collection[str]) -> Delta:
    """What a layer above ``old`` must hold so that the two flatten to ``new``: every path
    whose entry differs (header, content, or hardlink set; ``same_content`` names the
    regular files hashed equal), whole hardlink sets, every directory above a written path,
    and whiteouts for the topmost of the paths ``new`` lacks (or holds as another kind of
    node where one of the two is a directory)."""
    links_old, links_new = link_sets(old), link_sets(new)
    same = set(same_content)
    changed = {
        path for path, entry in new.entries.items()
        if (prev := old.entries.get(path)) is None
        or _meta(entry) != _meta(prev)
        or (entry.kind == "reg" and path not in same)
        or links_old.get(path) != links_new.get(path)
    }
    return complete(changed, old, new, links_new)


def written_bytes(tree: FileTree, paths: Collection[str]) -> int:
    """File bytes a patch holds (each hardlink set once)."""
    seen: set[int] = set()
    total = 0
    for path in paths:
        entry = tree.entries[path]
        if entry.kind != "reg":
            continue
        if entry.link:
            if entry.link in seen:
                continue
            seen.add(entry.link)
        total += entry.size
    return total


def tree_bytes(tree: FileTree) -> int:
    return written_bytes(tree, list(tree.entries))


@dataclass(frozen=True)
class Decision:
    """Whether this build is a patch, and why not when it is not (for the log and report)."""

    patch: bool
    reason: str


def may_patch(
    slots: int,
    previous: PatchRecord,
    previous_layers: int,
    planned_layers: int | None,
) -> Decision:
    """Before reading anything: a free patch slot, and a previous build whose manifest has
    the layers its record names (``planned_layers``: its plan's count, None without one)."""
    if slots <= 0:
        return Decision(False, "patches are off")
    if planned_layers is None:
        return Decision(False, "the previous build has no plan label")
    if previous.layers >= slots:
        return Decision(False, f"the previous build already has {previous.layers} of"
                        f" {slots} patch layers: planning every layer again")
    if planned_layers + previous.layers != previous_layers:
        return Decision(False, f"the previous build's record names {planned_layers} + "
                        f"{previous.layers} layers, its manifest has {previous_layers}")
    return Decision(True, "")


def worth_it(previous: PatchRecord, patch_bytes: int, image_bytes: int) -> Decision:
    """After the delta is known: the patches' files stay within their share of the image."""
    total = previous.bytes + patch_bytes
    if image_bytes and total > MAX_PATCH_SHARE * image_bytes:
        return Decision(False, f"the patches would hold {total} of {image_bytes} file bytes,"
                        f" over {MAX_PATCH_SHARE:.0%}: planning every layer again")
    return Decision(True, "")


def patch_label(previous: PreviousPlan, groups: tuple[Group, ...]) -> str:
    """The plan label of a patch build: the previous layers as they still are, with the
    history of this build's versions (so ``diff`` names the groups that changed and the
    next full plan learns how often they do). A group new in this build sits in the patch
    and enters the record at the next full plan."""
    layers = tuple(PlannedLayer(la.name, la.groups, (), (), 0, 0.0) for la in previous.layers)
    return encode(Plan(layers), groups, previous)


def next_record(previous: PatchRecord, patch_bytes: int) -> PatchRecord:
    return PatchRecord(previous.layers + 1, previous.bytes + patch_bytes)

