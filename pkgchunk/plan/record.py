"""The ``org.pkgchunk.plan`` config label: the plan and change history the next build needs.

Stored in the image config (podman and skopeo keep config labels, they drop
layer annotations). Compact JSON, for example::

    {"layers":[["src/glibc",[["src/glibc",4,1,"2.39-6.fc40"]]]],"n":4,"v":1}

``layers`` in output order, each ``[name, [[group key, seen, changed, version], ...]]``:
the group was in ``seen`` builds and its version changed in ``changed`` of them;
``version`` is its latest version string (a short digest when long). ``n`` counts
builds. Only groups of the current image are recorded, and ``seen`` is capped at
``HISTORY_CAP`` (``changed`` scaled with it) so old behaviour fades and the label
stays a few dozen bytes per group.

The label comes from an earlier image, so it is hostile input: every field is
checked and a bad label is a warning, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pkgchunk.errors import InputError
from pkgchunk.layers import LayerSpec
from pkgchunk.pkgdb.model import Ownership
from pkgchunk.plan import frequency, planner
from pkgchunk.plan.groups import DerivedMode, Group, build_groups
from pkgchunk.plan.planner import GroupHistory, Plan, PreviousLayer, PreviousPlan
from pkgchunk.plan.rules import Rules
from pkgchunk.tree import FileTree

LABEL = "org.pkgchunk.plan"
FORMAT_VERSION = 1
HISTORY_CAP = 50
MAX_LABEL_CHARS = 8 << 20
MAX_LAYERS = 10_000
MAX_GROUPS = 1_000_000
MAX_KEY_CHARS = 8192
MAX_VERSION_CHARS = 256
MAX_COUNT = 1 << 31


def _history(group: Group | None, old: GroupHistory | None) -> GroupHistory:
    version = group.version if group is not None else ""
    if old is None:
        return GroupHistory(seen=1, changed=0, version=version)
    seen = old.seen + 1
    changed = min(old.changed, old.seen - 1) + (version != old.version)
    if seen > HISTORY_CAP:
        changed = (changed * HISTORY_CAP + seen // 2) // seen
        seen = HISTORY_CAP
    return GroupHistory(seen=seen, changed=changed, version=version)


def encode(plan: Plan, groups: Sequence[Group], previous: PreviousPlan | None) -> str:
    """The label value for this build: its plan plus updated per-group history."""
    by_key = {g.key: g for g in groups}
    old = previous.history if previous is not None else {}
    layers = []
    for layer in plan.layers:
        entries = []
        for key in layer.groups:
            h = _history(by_key.get(key), old.get(key))
            entries.append([key, h.seen, h.changed, h.version])
        layers.append([layer.name, entries])
    builds = min(MAX_COUNT, (previous.builds if previous is not None else 0) + 1)
    doc = {"v": FORMAT_VERSION, "n": builds, "layers": layers}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, sort_keys=True)


def _fail(problem: str) -> InputError:
    return InputError(f"{LABEL} label: {problem}")


def _count(value: object, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COUNT:
        raise _fail(f"{what} must be an integer >= {low}")
    return value


def _text(value: object, what: str, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > limit or (not value and not empty):
        raise _fail(f"{what} must be a {'' if empty else 'non-empty '}string of <= {limit} chars")
    return value


def decode(label: str) -> PreviousPlan:
    """Parse and validate a label value; InputError (one line) when malformed."""
    if len(label) > MAX_LABEL_CHARS:
        raise _fail(f"larger than {MAX_LABEL_CHARS} characters")
    try:
        doc = json.loads(label)
    except (ValueError, RecursionError) as err:
        raise _fail(f"not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise _fail("not a JSON object")
    if doc.get("v") != FORMAT_VERSION or isinstance(doc.get("v"), bool):
        raise _fail(f"unsupported format version {doc.get('v')!r} (this pkgchunk writes 1)")
    unknown = set(doc) - {"v", "n", "layers"}
    if unknown:
        raise _fail(f"unknown fields {', '.join(sorted(map(str, unknown)))}")
    builds = _count(doc.get("n"), "n", 1)
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list) or len(raw_layers) > MAX_LAYERS:
        raise _fail(f"layers must be a list of at most {MAX_LAYERS}")
    layers: list[PreviousLayer] = []
    history: dict[str, GroupHistory] = {}
    names: set[str] = set()
    for i, item in enumerate(raw_layers):
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
            raise _fail(f"layers[{i}] must be [name, [groups...]]")
        name = _text(item[0], f"layers[{i}] name", MAX_KEY_CHARS)
        if name in names:
            raise _fail(f"layer name {name!r} appears twice")
        names.add(name)
        keys: list[str] = []
        for j, entry in enumerate(item[1]):
            where = f"layers[{i}][{j}]"
            if not isinstance(entry, list) or len(entry) != 4:
                raise _fail(f"{where} must be [key, seen, changed, version]")
            key = _text(entry[0], f"{where} key", MAX_KEY_CHARS)
            seen = _count(entry[1], f"{where} seen", 1)
            changed = _count(entry[2], f"{where} changed")
            if changed >= seen:
                raise _fail(f"{where} changed {changed} must be below seen {seen}")
            version = _text(entry[3], f"{where} version", MAX_VERSION_CHARS, empty=True)
            if key in history:
                raise _fail(f"group {key!r} is in two layers")
            if len(history) >= MAX_GROUPS:
                raise _fail(f"more than {MAX_GROUPS} groups")
            history[key] = GroupHistory(seen=seen, changed=changed, version=version)
            keys.append(key)
        layers.append(PreviousLayer(name=name, groups=tuple(keys)))
    return PreviousPlan(layers=tuple(layers), history=history, builds=builds)


def previous_from_labels(
    labels: Mapping[str, str] | None,
) -> tuple[PreviousPlan | None, tuple[str, ...]]:
    """The previous plan from an image config's labels, and warnings (a bad label is
    ignored with a warning: the build then plans from scratch)."""
    if not labels or LABEL not in labels:
        return None, ()
    value = labels[LABEL]
    if not isinstance(value, str):
        return None, (f"{LABEL} label: not a string; planning from scratch",)
    try:
        return decode(value), ()
    except InputError as err:
        return None, (f"{err}; planning from scratch",)


@dataclass(frozen=True)
class PlanOutcome:
    """Everything ``rechunk`` needs from planning: what to write and what to record."""

    groups: tuple[Group, ...]
    probabilities: Mapping[str, float]
    plan: Plan
    layer_specs: tuple[LayerSpec, ...]
    label: str
    warnings: tuple[str, ...]


def plan_image(
    tree: FileTree,
    ownership: Ownership,
    rules: Rules,
    previous_labels: Mapping[str, str] | None = None,
    *,
    max_layers: int | None = None,
    fresh: bool = False,
    derived: DerivedMode = "separate",
) -> PlanOutcome:
    """Groups, probabilities, plan, layer specs and the new label in one call.

    ``previous_labels`` are the config labels of the previous build (or None);
    ``fresh`` ignores its layout but keeps its change history. ``derived="follow"``
    puts generated files with their origin's group; only right when the mtime policy
    clamps them like their origin (``mtimes`` "clamp" does), else they would drag that
    group's layer along on every build (docs/planner.md, "Derived files").
    """
    previous, warnings = previous_from_labels(previous_labels)
    groups = build_groups(tree, ownership, rules, derived=derived)
    probs = frequency.probabilities(groups, ownership.packages, previous)
    layout = None if fresh else previous
    result = planner.plan(groups, probs, max_layers or rules.max_layers, layout)
    return PlanOutcome(
        groups=groups,
        probabilities=probs,
        plan=result,
        layer_specs=tuple(planner.to_layer_specs(result)),
        label=encode(result, groups, previous),
        warnings=warnings,
    )
