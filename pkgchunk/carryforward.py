"""Carrying unchanged entries forward from the previous build: the I/O around ``plan.carry``.

Reads only the previous build's layers :func:`pkgchunk.plan.carry.layers_to_read` names
(those holding a group that changed version, an unowned bucket, the package databases, or
entries that build carried itself), hashes only the files whose every other attribute already
matches, and lets ``plan.carry`` decide. Anything wrong with the previous build (its plan
does not match its manifest, a layer does not read) is one warning and no carrying: the
build is then exactly what the policy alone gives.

A previous build that is remote (``docker://``, ``containers-storage:``) is only inspected
by ``previous``; when it has layers worth reading it is copied by skopeo (the whole image:
skopeo has no single-blob fetch), once per build.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pkgchunk import progress
from pkgchunk.errors import PkgchunkError
from pkgchunk.image import LayerSpec
from pkgchunk.io import open_layers
from pkgchunk.plan import carry
from pkgchunk.plan.groups import Group
from pkgchunk.plan.record import MTIME_LABEL, MtimeRecord
from pkgchunk.previous import Previous
from pkgchunk.tree import ContentHasher, FileTree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CarryResult:
    """The tree to write, the labels recording it, and what it cost."""

    tree: FileTree
    labels: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    carried: int = 0
    layers_read: int = 0
    layers_total: int = 0
    bytes_read: int = 0
    files_hashed: int = 0
    seconds: float = 0.0


def previous_entries(
    tree: FileTree, hashed: Iterable[str] = ()
) -> dict[str, carry.PrevEntry]:
    """The entries of a (partly) read previous build; content digests only for ``hashed``."""
    hasher = ContentHasher(tree)
    want = set(hashed)
    out = {}
    for path, e in tree.entries.items():
        digest = hasher.digest(e) if path in want and e.kind == "reg" and e.data else ""
        out[path] = carry.PrevEntry(carry.identity(e, digest), e.mtime)
    return out


def carried_from(
    tree: FileTree,
    prev_tree: FileTree,
    new_hash: ContentHasher | None = None,
    old_hash: ContentHasher | None = None,
) -> tuple[carry.Carried, int]:
    """``tree`` with the mtimes of the identical entries of ``prev_tree`` (a previous build,
    read), and how many files it hashed. The hashers may be shared with a caller that
    compares more contents of the same two trees."""
    new_hash = new_hash or ContentHasher(tree)
    old_hash = old_hash or ContentHasher(prev_tree)
    prev_meta = previous_entries(prev_tree)
    cands = carry.candidates(tree, prev_meta)
    with progress.step(f"hashing {len(cands)} unchanged-looking files"):
        digests = {p: new_hash.digest(tree.entries[p]) for p in cands}
        previous = dict(prev_meta)
        for p in cands:
            old = prev_tree.entries[p]
            if old.data is not None:
                previous[p] = carry.PrevEntry(carry.identity(old, old_hash.digest(old)), old.mtime)
    return carry.carry(tree, previous, digests), len(cands)


def relabel(labels: Mapping[str, str], digest: str, carried: tuple[int, ...]) -> dict[str, str]:
    """``labels`` whose mtime record names the previous build ``digest`` as the one entries
    were carried from, and the layers ``carried`` holding them."""
    record = MtimeRecord.parse(labels.get(MTIME_LABEL))
    if record is None or record.policy != "clamp":
        return dict(labels)
    new = MtimeRecord(record.policy, record.source_date_epoch, record.directory_epoch,
                      digest, carried)
    return {**labels, MTIME_LABEL: new.label()}


def carry_forward(
    tree: FileTree,
    groups: Sequence[Group],
    specs: Sequence[LayerSpec],
    labels: Mapping[str, str],
    prev: Previous,
) -> CarryResult:
    """``tree`` (the policy applied) with the previous build's mtimes on identical entries."""
    t0 = time.monotonic()
    record = prev.record
    if record.plan is None or prev.digest is None:
        return CarryResult(tree, labels)  # not a pkgchunk build: nothing recorded to go by
    blobs = list(prev.blobs)
    total = len(record.plan.layers) + record.patch.layers
    if total != len(blobs):
        return CarryResult(tree, labels, (
            f"{prev.ref}: its plan names {total} layers but its manifest has {len(blobs)};"
            " unchanged entries are not carried forward",), layers_total=total)
    carried_before = record.mtime.carried if record.mtime is not None else ()
    if record.patch.layers:
        # Patches hide older copies below them: only the whole stack says what is current.
        wanted: tuple[int, ...] = tuple(range(total))
    else:
        wanted = carry.layers_to_read(record.plan, groups, carried_before)
    if not wanted:
        return CarryResult(tree, labels, layers_total=total)
    try:
        blobs = list(prev.local_blobs())
        chosen = [blobs[i] for i in wanted]
        with open_layers(prev.ref, chosen) as image:
            result, cands = carried_from(tree, image.tree)
            read = sum(b.size or 0 for b in chosen)
    except PkgchunkError as err:
        return CarryResult(tree, labels, (
            f"{err}; unchanged entries are not carried forward",), layers_total=total)
    layers = carry.carried_layers(specs, result.paths)
    took = time.monotonic() - t0
    log.debug("carried %d entries forward from %s: read %d of %d layers (%d bytes),"
              " hashed %d files, %.1f s", len(result.paths), prev.ref, len(wanted), total,
              read, cands, took)
    # The record names the previous build only when an entry took its mtime.
    final = relabel(labels, prev.digest, layers) if result.paths else labels
    return CarryResult(
        result.tree, final, (), len(result.paths),
        len(wanted), total, read, cands, took,
    )
