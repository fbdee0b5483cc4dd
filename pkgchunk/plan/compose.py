"""The one entry point of planning: a flattened tree, its ownership, the rules and the
previous build's record in; the tree as it will be written, its layers and the new record out.

Pure: no image or file I/O here (the caller reads the image, the package databases and the
rules file), so the same inputs always give the same plan, and the benchmark and the CLI
run exactly the same recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pkgchunk.image import LayerSpec
from pkgchunk.pkgdb.model import Ownership
from pkgchunk.plan import frequency, mtimes, planner
from pkgchunk.plan.groups import DerivedMode, Group, build_groups
from pkgchunk.plan.planner import Plan, PreviousPlan
from pkgchunk.plan.record import BuildRecord, MtimeRecord, encode, record_labels
from pkgchunk.plan.rules import Rules
from pkgchunk.plan.split import SplitInfo, split_groups
from pkgchunk.tree import FileTree


@dataclass(frozen=True)
class PlanOutcome:
    """Everything ``rechunk`` needs from planning: what to write and what to record."""

    groups: tuple[Group, ...]
    probabilities: Mapping[str, float]
    plan: Plan
    layer_specs: tuple[LayerSpec, ...]
    label: str
    warnings: tuple[str, ...]
    #: The package groups split into parts by file behaviour, and why (plan/split.py).
    splits: tuple[SplitInfo, ...] = ()


def plan_layers(
    tree: FileTree,
    ownership: Ownership,
    rules: Rules,
    previous: PreviousPlan | None = None,
    *,
    max_layers: int | None = None,
    fresh: bool = False,
    derived: DerivedMode = "separate",
    warnings: tuple[str, ...] = (),
) -> PlanOutcome:
    """Groups, probabilities, plan, layer specs and the new plan label for a tree whose
    mtimes are final.

    ``fresh`` plans as if there were no previous build (layout and change history), and
    still records the history for later builds. ``derived="follow"``
    puts generated files with their origin's group; only right when the mtime policy
    clamps them like their origin (``mtimes`` "clamp" does), else they would drag that
    group's layer along on every build (docs/planner.md, "Derived files").
    """
    groups, splits = split_groups(
        build_groups(tree, ownership, rules, derived=derived), tree, ownership, rules, previous
    )
    # a fresh plan is the one a build without any previous one makes (no layout, no history)
    # so that fresh builds of successive images land alike (plan/stable.py)
    basis = None if fresh else previous
    probs = frequency.probabilities(groups, ownership.packages, basis)
    result = planner.plan(groups, probs, max_layers or rules.max_layers, basis, first="stable")
    return PlanOutcome(
        groups=groups,
        probabilities=probs,
        plan=result,
        layer_specs=tuple(planner.to_layer_specs(result)),
        label=encode(result, groups, previous),
        warnings=warnings,
        splits=splits,
    )


@dataclass(frozen=True)
class Composition:
    """A planned build: the tree with the mtime policy applied, its plan, and its record."""

    tree: FileTree
    outcome: PlanOutcome
    mtime: MtimeRecord

    @property
    def labels(self) -> dict[str, str]:
        """The config labels recording this build for the next one and for ``verify``."""
        return record_labels(self.outcome.label, self.mtime)


def mtime_record(
    tree: FileTree,
    ownership: Ownership,
    previous: BuildRecord,
    policy: mtimes.Policy,
    source_date_epoch: int | None,
) -> MtimeRecord:
    """The mtime policy this build applies: with clamp, the directories' limit carried from
    the previous build (else derived from this tree), so it never moves once chosen."""
    dirs = None
    if policy == "clamp":
        dirs = mtimes.directory_epoch(tree, ownership, previous.carried_directory_epoch)
    return MtimeRecord(policy, source_date_epoch, dirs)


def compose(
    tree: FileTree,
    ownership: Ownership,
    rules: Rules,
    previous: BuildRecord | None = None,
    *,
    max_layers: int | None = None,
    fresh: bool = False,
    mtime_policy: mtimes.Policy = "clamp",
    source_date_epoch: int | None = None,
) -> Composition:
    """Apply the mtime policy (carrying the previous build's directory limit), then plan."""
    record = previous or BuildRecord()
    mtime = mtime_record(tree, ownership, record, mtime_policy, source_date_epoch)
    final = mtimes.apply(
        tree, ownership, policy=mtime_policy, source_date_epoch=source_date_epoch,
        directory_epoch=mtime.directory_epoch,
    )
    outcome = plan_layers(
        final, ownership, rules, record.plan, max_layers=max_layers, fresh=fresh,
        derived="follow" if mtime_policy == "clamp" else "separate",
        warnings=record.warnings,
    )
    return Composition(final, outcome, mtime)
