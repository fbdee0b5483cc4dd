"""The pipeline: open the sources (``io``), read their package databases (``pkgdb``), plan
the layers against the previous build's record (``plan.compose``), write DEST (``io``).

Everything that decides a layer lives in ``plan/``; this module only wires the stages
together and gathers what the CLI reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pkgchunk import bootc, progress
from pkgchunk.carryforward import carry_forward
from pkgchunk.errors import InputError
from pkgchunk.image import Image
from pkgchunk.io import has_tag, open_image, open_stack, write_image
from pkgchunk.keepbase import Base, open_base
from pkgchunk.oci.mediatypes import SAME_BYTES
from pkgchunk.oci.write import KeptLayer, ReusableBlob, WriteOptions, WriteResult
from pkgchunk.patching import Patched, patch_over
from pkgchunk.pkgdb.model import Ownership
from pkgchunk.pkgdb.ownership import collect
from pkgchunk.plan import mtimes
from pkgchunk.plan.above import compose_above
from pkgchunk.plan.compose import PlanOutcome, compose
from pkgchunk.plan.matches import unmatched_warnings
from pkgchunk.plan.planner import Plan, PlannedLayer
from pkgchunk.plan.record import BuildRecord
from pkgchunk.plan.rules import Rules, default_rules_name, load_rules
from pkgchunk.previous import Previous, open_previous
from pkgchunk.progress import human_size
from pkgchunk.prune import owner_key, prune, split_links
from pkgchunk.refs import ImageRef, parse_ref
from pkgchunk.sbom import read_os_release
from pkgchunk.tree import FileTree

log = logging.getLogger(__name__)

#: One source reference, or several stacked in order (base first).
Sources = str | ImageRef | Sequence[str | ImageRef]


def source_blobs(image: Image) -> dict[str, ReusableBlob]:
    """diff_id -> compressed blob of the source, so an unchanged layer is copied, not redone."""
    out: dict[str, ReusableBlob] = {}
    for layer in image.layers:
        path = image.blob_path.get(layer.digest)
        if path is None or not layer.diff_id:
            continue
        media_type = SAME_BYTES.get(layer.media_type, layer.media_type)
        out.setdefault(
            layer.diff_id,
            ReusableBlob(path, layer.digest, layer.size, media_type, layer.annotations),
        )
    return out


# --------------------------------------------------------------------------- package plans

@dataclass(frozen=True)
class PlanOptions:
    """How to plan: rules (path or shipped name; None = by image family), layer budget
    (None = the rules'), previous build (None = DEST's tag when it exists), fresh
    (ignore the previous layout, keep its history) and the mtime policy."""

    rules: str | None = None
    max_layers: int | None = None
    prev: str | None = None
    fresh: bool = False
    mtime_policy: mtimes.Policy = "clamp"
    ignore_pkgdb_errors: bool = False
    #: ``--keep-base``: a base image reference, or a count of bottom layers, kept byte for
    #: byte; only what is above them is planned (``keepbase.py``).
    keep_base: str | None = None
    #: bootc images lose /sysroot/ostree and its labels unless this is set (pkgchunk.bootc).
    keep_sysroot: bool = False
    #: More trees to leave out (``--prune``; a trailing '/' keeps the directory).
    prune: tuple[str, ...] = ()
    #: ``KEY=VALUE`` / ``KEY-`` label edits (``--label``), applied in order.
    labels: tuple[str, ...] = ()
    #: Give entries identical to the previous build's that build's (older) mtime (clamp only).
    carry: bool = True
    #: ``--patch-layers K``: keep up to K top layers of the budget for patches, and write a
    #: build over a previous one as its layers plus one layer of what changed
    #: (``plan/patch.py``) while a slot is free and the patches stay small. Needs carry.
    #: None: the rules' ``patch_layers`` (0 in every shipped rules file).
    patch_layers: int | None = None


@dataclass(frozen=True)
class Planned:
    """A planned image: the tree as it will be written, and the plan for it."""

    tree: FileTree
    ownership: Ownership
    rules_name: str
    outcome: PlanOutcome
    #: The directories' mtime limit used (clamp policy; carried from the previous build).
    directory_epoch: int | None = None
    #: The config labels that record this build (``plan.record``).
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: The previous build planned against (``plan_only``; rechunk reports it in its result).
    previous: str | None = None
    #: The base layers kept below the plan (``--keep-base``), bottom first.
    base: tuple[KeptLayer, ...] = ()
    #: What was left out and which labels change (bootc and --prune/--label).
    policy: bootc.Policy | None = None
    #: Paths left out, per prefix.
    pruned: tuple[tuple[str, int], ...] = ()
    warnings: tuple[str, ...] = ()
    #: A patch build (``--patch-layers``): ``base`` are the previous build's layers, and the
    #: plan is the one patch layer; otherwise why no patch was written ('' when none asked).
    patched: bool = False
    patch_note: str = ""
    #: The patch slots this build kept free (``--patch-layers``, else the rules').
    patch_slots: int = 0

    @property
    def notes(self) -> tuple[str, ...]:
        """Informational lines for stderr (the bootc detection line)."""
        note = self.policy.note if self.policy is not None else None
        return tuple(n for n in (note, self.patch_note) if n)


@dataclass(frozen=True)
class RechunkResult:
    """``os_release`` is the image's /etc/os-release (for SBOM package URLs)."""

    write: WriteResult
    planned: Planned
    previous: str | None
    warnings: tuple[str, ...]
    os_release: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _rules(opts: PlanOptions, ownership: Ownership) -> tuple[Rules, str]:
    if opts.rules is not None:
        return load_rules(opts.rules), opts.rules
    name = default_rules_name(ownership)
    return load_rules(name), name


def _check(opts: PlanOptions) -> None:
    """Options that cannot work together fail before any image is read."""
    if opts.rules is not None:
        load_rules(opts.rules)  # a bad rules file fails now
    if opts.patch_layers and opts.keep_base is not None:
        raise InputError("--patch-layers and --keep-base do not combine: the base's layers"
                         " are kept byte for byte already, and only a whole plan is patched")


def _budget(opts: PlanOptions, rules: Rules) -> tuple[int | None, int]:
    """The layers the planner may fill (the budget less the slots kept for patches), and
    the slots."""
    slots = rules.patch_layers if opts.patch_layers is None else opts.patch_layers
    if not slots:
        return opts.max_layers, 0
    total = opts.max_layers or rules.max_layers
    if slots >= total:
        raise InputError(
            f"--patch-layers {slots}: must leave at least one of the {total}"
            " layers (--max-layers) for packages"
        )
    return total - slots, slots


def plan_tree(
    tree: FileTree,
    opts: PlanOptions,
    previous: BuildRecord | None,
    source_date_epoch: int | None = None,
    loose_links: frozenset[int] = frozenset(),
) -> Planned:
    """Ownership, rules, mtime policy and plan for one flattened tree (no writing).

    ``loose_links`` are hard link sets that reached into a pruned tree (an ostree object
    store): they are split by owning package, so they glue no packages together."""
    ownership = collect(tree, ignore_errors=opts.ignore_pkgdb_errors)
    if loose_links:
        tree = split_links(tree, loose_links, owner_key(ownership.owners))
    rules, rules_name = _rules(opts, ownership)
    fill, slots = _budget(opts, rules)
    composed = compose(
        tree, ownership, rules, previous, max_layers=fill, fresh=opts.fresh,
        mtime_policy=opts.mtime_policy, source_date_epoch=source_date_epoch,
    )
    outcome = composed.outcome
    unmatched = unmatched_warnings(rules, outcome.groups)
    if unmatched:
        outcome = dataclasses.replace(outcome, warnings=outcome.warnings + unmatched)
    budget = bootc.layer_budget_warning(
        opts.max_layers or rules.max_layers, len(outcome.plan.layers)
    )
    return Planned(
        composed.tree, ownership, rules_name, outcome,
        composed.mtime.directory_epoch, composed.labels, warnings=(budget,) if budget else (),
        patch_slots=slots,
    )


def _as_patch(planned: Planned, patched: Patched) -> Planned:
    """``planned`` as the patch build writes it (or, with no patch, its carried tree)."""
    if not patched.patch:
        return dataclasses.replace(planned, tree=patched.tree, labels=patched.labels,
                                   patch_note=patched.reason)
    if not patched.specs:
        empty = dataclasses.replace(planned.outcome, plan=Plan(()), layer_specs=(), splits=())
        return dataclasses.replace(
            planned, tree=patched.tree, labels=patched.labels, outcome=empty,
            base=patched.kept, patched=True,
            patch_note="no change since the previous build: its layers as they are",
        )
    (spec,) = patched.specs
    touched = set(spec.paths)
    groups = tuple(g.key for g in planned.outcome.groups if touched.intersection(g.paths))
    names = sorted({v.rpartition("=")[0] for g in planned.outcome.groups
                    if g.key in groups for v in g.versions})
    layer = PlannedLayer(spec.name, groups, tuple(names), spec.paths, patched.bytes, 1.0)
    outcome = dataclasses.replace(
        planned.outcome, plan=Plan((layer,)), layer_specs=patched.specs, splits=(),
    )
    note = (f"patch layer {spec.name}: {len(spec.paths)} paths, {human_size(patched.bytes)}"
            f" of files, {len(spec.whiteouts)} removed, over the previous build's"
            f" {len(patched.kept)} layers")
    return dataclasses.replace(planned, tree=patched.tree, labels=patched.labels,
                               outcome=outcome, base=patched.kept, patched=True,
                               patch_note=note)


def mark_reused(result: WriteResult, previous_digests: frozenset[str]) -> WriteResult:
    """Mark layers whose digest the previous build already has: the writer knows only the
    blobs it copied, and a registry's or store's previous image is never downloaded."""
    layers = tuple(
        dataclasses.replace(w, reused=True) if w.digest in previous_digests and not w.reused
        else w
        for w in result.layers
    )
    return dataclasses.replace(result, layers=layers)


def plan_above(
    image: Image,
    base: Base,
    opts: PlanOptions,
    previous: BuildRecord | None,
    source_date_epoch: int | None = None,
    drop: Callable[[str], bool] | None = None,
) -> Planned:
    """The plan of what ``image`` adds above ``base``, against the final image's packages
    (``drop``: paths pruned from the output, pruned from the delta only)."""
    ownership = collect(image.tree, ignore_errors=opts.ignore_pkgdb_errors)
    rules, rules_name = _rules(opts, ownership)
    composed = compose_above(
        image.tree, base.tree, len(base.layers), ownership, rules, previous,
        max_layers=opts.max_layers, fresh=opts.fresh, mtime_policy=opts.mtime_policy,
        source_date_epoch=source_date_epoch, drop=drop,
    )
    return Planned(
        composed.tree, ownership, rules_name, composed.outcome,
        composed.mtime.directory_epoch, composed.labels, base=base.layers,
    )


def _plan(
    image: Image,
    opts: PlanOptions,
    previous: BuildRecord | None,
    source_date_epoch: int | None,
    stack: contextlib.ExitStack,
) -> Planned:
    # bootc / --prune / --label: what to leave out, decided before ownership and planning.
    policy = bootc.decide(image.labels, image.tree, keep_sysroot=opts.keep_sysroot,
                          prune=opts.prune, label_edits=opts.labels)
    pruned = prune(image.tree, policy.edits.prune)
    counts = tuple((str(p), n) for p, n in pruned.counts)
    if opts.keep_base is None:
        planned = plan_tree(pruned.tree, opts, previous, source_date_epoch, pruned.loose)
    else:
        base = stack.enter_context(open_base(image, opts.keep_base))
        prefixes = policy.edits.prune
        planned = plan_above(image, base, opts, previous, source_date_epoch,
                             drop=(lambda p: any(x.matches(p) for x in prefixes))
                             if prefixes else None)
    return dataclasses.replace(planned, policy=policy, pruned=counts)


def _previous(dest: ImageRef, opts: PlanOptions) -> Previous | None:
    if opts.prev is not None:
        return open_previous(opts.prev)
    if has_tag(dest):
        return open_previous(dest, side="dest")
    return None


def _open_sources(src: Sources) -> Image:
    if isinstance(src, str | ImageRef):
        return open_image(src)
    return open_stack(src)


def rechunk_packages(
    src: Sources,
    dest: str | ImageRef,
    opts: PlanOptions | None = None,
    write: WriteOptions | None = None,
) -> RechunkResult:
    """The main job: flatten SRC, plan by package (stable against the previous build),
    write DEST reusing every unchanged compressed layer. Several sources are stacked
    in order and rechunked as one image (a merge)."""
    opts = opts or PlanOptions()
    _check(opts)
    wopts = write or WriteOptions()
    dest_ref = parse_ref(dest, output=True) if isinstance(dest, str) else dest
    with contextlib.ExitStack() as stack:
        prev = _previous(dest_ref, opts)
        if prev is not None:
            stack.callback(prev.close)
        log.debug("previous build: %s", prev.ref if prev else "none")
        t0 = time.monotonic()
        with _open_sources(src) as image:
            t1 = time.monotonic()
            log.debug("read %s: %d paths in %.1f s", image.ref, len(image.tree), t1 - t0)
            planned = _plan(
                image, opts, prev.record if prev else None, wopts.source_date_epoch, stack
            )
            carry_warnings: tuple[str, ...] = ()
            carrying = prev is not None and opts.carry and opts.mtime_policy == "clamp"
            patched = None
            if carrying and prev is not None and planned.patch_slots and not opts.fresh:
                patched = patch_over(
                    planned.tree, planned.outcome.groups, planned.outcome.layer_specs,
                    planned.labels, prev, planned.patch_slots,
                )
            if patched is not None and (patched.patch or patched.read):
                planned = _as_patch(planned, patched)
            elif carrying and prev is not None:
                carried = carry_forward(
                    planned.tree, planned.outcome.groups, planned.outcome.layer_specs,
                    planned.labels, prev,
                )
                planned = dataclasses.replace(planned, tree=carried.tree, labels=carried.labels)
                carry_warnings = carried.warnings
                if patched is not None:
                    carry_warnings += patched.warnings
                    planned = dataclasses.replace(planned, patch_note=patched.reason)
            t2 = time.monotonic()
            log.debug("planned %d layers (rules %s) in %.1f s",
                      len(planned.outcome.layer_specs), planned.rules_name, t2 - t1)
            release = read_os_release(image.tree)
            labels = {**wopts.labels, **planned.labels}
            assert planned.policy is not None
            config = bootc.edit_config(image.config, planned.policy)
            if planned.policy.edits:
                labels[bootc.EDITS_LABEL] = bootc.encode_edits(planned.policy.edits)
            reuse = {**source_blobs(image), **(prev.reuse if prev else {}), **wopts.reuse}
            final = dataclasses.replace(wopts, labels=labels, reuse=reuse, base=planned.base)
            with progress.step(f"writing {dest_ref}"):
                result = write_image(
                    planned.tree, config, planned.outcome.layer_specs, dest_ref, final
                )
            if prev is not None:
                result = mark_reused(result, prev.digests)
            log.debug("wrote %s in %.1f s (%d of %d layers reused)", result.ref,
                      time.monotonic() - t2, sum(w.reused for w in result.layers),
                      len(result.layers))
        warnings = (planned.tree.warnings + planned.ownership.warnings
                    + planned.outcome.warnings + planned.warnings
                    + carry_warnings)
        return RechunkResult(result, planned, prev.ref if prev else None, warnings, release)


def plan_only(
    src: Sources, opts: PlanOptions | None = None, dest: str | ImageRef | None = None
) -> Planned:
    """The plan ``rechunk`` would write for SRC (``pkgchunk plan``); with ``dest``, the
    previous build is found as rechunk finds it (``--prev``, else DEST's tag)."""
    opts = opts or PlanOptions()
    _check(opts)
    if dest is not None:
        prev = _previous(parse_ref(dest, output=True) if isinstance(dest, str) else dest, opts)
    else:
        prev = open_previous(opts.prev) if opts.prev is not None else None
    try:
        with _open_sources(src) as image, contextlib.ExitStack() as stack:
            planned = _plan(image, opts, prev.record if prev else None, None, stack)
            note = planned.patch_note
            if prev is not None and planned.patch_slots and not opts.fresh:
                note = (f"this is the full plan; with {planned.patch_slots} patch slots rechunk"
                        " writes the previous build's layers plus one patch layer instead, when"
                        " one fits")
            return dataclasses.replace(planned, previous=prev.ref if prev else None,
                                       patch_note=note)
    finally:
        if prev is not None:
            prev.close()
