"""``--patch-layers K``: the previous build's layers as they are, and one layer of what changed.

The decision and the delta are ``plan/patch.py``'s; this module reads the previous build
(every layer: a patch hides older copies below it, so only the whole stack says what is
current), carries unchanged entries forward from it, hashes the files only their content
can tell apart, and hands ``rechunk`` either a patch (kept layers, one layer spec, labels)
or the carried tree with the reason it planned every layer again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pkgchunk import progress
from pkgchunk.carryforward import carried_from, relabel
from pkgchunk.errors import PkgchunkError
from pkgchunk.image import LayerSpec
from pkgchunk.io import open_layers
from pkgchunk.oci.mediatypes import SAME_BYTES
from pkgchunk.oci.spool import LayerBlob
from pkgchunk.oci.write import KeptLayer, ReusableBlob
from pkgchunk.plan import carry, patch
from pkgchunk.plan.above import subtree
from pkgchunk.plan.groups import Group
from pkgchunk.plan.record import LABEL, MTIME_LABEL, PATCH_LABEL
from pkgchunk.previous import Previous
from pkgchunk.tree import ContentHasher, FileTree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Patched:
    """What ``rechunk`` writes for a patch build, or (``patch`` False) the carried tree to
    plan as usual and ``reason`` why."""

    patch: bool
    tree: FileTree
    labels: Mapping[str, str]
    reason: str = ""
    kept: tuple[KeptLayer, ...] = ()
    specs: tuple[LayerSpec, ...] = ()
    warnings: tuple[str, ...] = ()
    #: Whether the previous build was read, so ``tree`` has its identical entries carried.
    read: bool = False
    #: File bytes written in the patch (each hardlink set once).
    bytes: int = 0


def patch_over(
    tree: FileTree,
    groups: Sequence[Group],
    specs: Sequence[LayerSpec],
    labels: Mapping[str, str],
    prev: Previous,
    slots: int,
) -> Patched:
    """A patch over ``prev`` when one fits; ``tree`` is this build with the mtime policy
    applied and ``labels`` its record. When none fits, ``read`` says whether the previous
    build was read (then ``tree`` is carried already), else the caller carries as usual."""
    record = prev.record
    planned = len(record.plan.layers) if record.plan is not None else None
    first = patch.may_patch(slots, record.patch, len(prev.blobs), planned)
    if not first.patch or prev.digest is None or record.plan is None or record.base_layers:
        reason = first.reason or "the previous build keeps a base"
        return Patched(False, tree, labels, reason=f"no patch layer: {reason}")
    t0 = time.monotonic()
    try:
        blobs = prev.local_blobs()
        with open_layers(prev.ref, blobs) as old:
            new_hash, old_hash = ContentHasher(tree), ContentHasher(old.tree)
            carried, _ = carried_from(tree, old.tree, new_hash, old_hash)
            final = carried.tree
            with progress.step("comparing with the previous build"):
                same = [
                    p for p in patch.to_hash(final, old.tree)
                    if new_hash.digest(final.entries[p])
                    == old_hash.digest(old.tree.entries[p])
                ]
            changed = patch.delta(final, old.tree, same)
            kept = tuple(
                _kept(n, info.digest, info.diff_id, old.blob_path, blobs[n - 1],
                      prev.comments[n - 1] if prev.comments else "")
                for n, info in enumerate(old.layers, 1)
            )
    except PkgchunkError as err:
        return Patched(False, tree, labels, reason=f"no patch layer: {err}",
                       warnings=(f"{err}; no patch layer, every layer planned again",))
    if not changed.paths and not changed.whiteouts:
        # Nothing changed: the previous image again, its record too, so a rebuild of the same
        # input gives the same manifest digest (bootc takes a new digest as an update).
        same_record = {k: prev.labels[k] for k in (LABEL, MTIME_LABEL, PATCH_LABEL)
                       if k in prev.labels}
        return Patched(True, subtree(final, ()), {**labels, **same_record}, kept=kept,
                       read=True)
    written = patch.written_bytes(final, changed.paths)
    # The mtime record names the previous build always: every entry below the patch has the
    # mtime that build wrote, which verify checks against it.
    enough = patch.worth_it(record.patch, written, patch.tree_bytes(final))
    if not enough.patch:
        full = (relabel(labels, prev.digest, carry.carried_layers(specs, carried.paths))
                if carried.paths else labels)
        return Patched(False, final, full, reason=f"no patch layer: {enough.reason}",
                       read=True)
    n = record.patch.layers + 1
    name = patch.PATCH_NAME.format(n=n)
    spec = LayerSpec(
        name, changed.paths, whiteouts=changed.whiteouts,
        comment=f"pkgchunk: patch {n} over {prev.digest}: {len(changed.paths)} paths,"
                f" {len(changed.whiteouts)} removed",
    )
    out = relabel(labels, prev.digest, ())
    out[LABEL] = patch.patch_label(record.plan, tuple(groups))
    out.update(patch.next_record(record.patch, written).label())
    took = time.monotonic() - t0
    log.debug("patch %d over %s: %d paths (%d file bytes), %d removed, %.1f s",
              n, prev.ref, len(changed.paths), written, len(changed.whiteouts), took)
    return Patched(
        True, subtree(final, changed.paths), out, kept=kept, specs=(spec,), read=True,
        bytes=written,
    )


def _kept(
    n: int, digest: str, diff_id: str, paths: Mapping[str, str], blob: LayerBlob, comment: str
) -> KeptLayer:
    """The previous build's layer ``n`` as it is (its own media type, annotations and
    history entry)."""
    media_type = SAME_BYTES.get(blob.media_type, blob.media_type)
    reusable = ReusableBlob(paths.get(digest, blob.path), digest, blob.size or 0, media_type,
                            blob.annotations)
    return KeptLayer(reusable, diff_id, blob.annotations,
                     comment=comment or f"pkgchunk: layer {n} of the previous build")
