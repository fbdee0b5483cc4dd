"""What pkgchunk records in an image's config labels, and its one codec (:class:`BuildRecord`).

``org.pkgchunk.mtime`` holds the mtime policy (:class:`MtimeRecord`). ``org.pkgchunk.plan``
holds the plan and change history the next build needs:

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

Written compact (:func:`compact`): ``gz:`` and the base64 of that JSON gzipped, about half
the characters, so ``skopeo inspect`` stays readable. The meaning is the JSON's, byte for
byte: ``... | cut -c4- | base64 -d | gunzip`` shows it, and :func:`decode` reads both
spellings (so labels of earlier builds still count).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pkgchunk.errors import InputError
from pkgchunk.plan.groups import Group
from pkgchunk.plan.mtimes import POLICIES, Policy
from pkgchunk.plan.planner import GroupHistory, Plan, PreviousLayer, PreviousPlan

LABEL = "org.pkgchunk.plan"
#: The mtime policy and its epochs, so ``verify`` can apply it to the input.
MTIME_LABEL = "org.pkgchunk.mtime"
#: How many bottom layers are a base kept byte for byte (``--keep-base``): ``layers=K``.
#: A label of its own, so that a pkgchunk reading the plan label alone is not disturbed.
BASE_LABEL = "org.pkgchunk.base"
#: The top layers that patch the previous build's (``plan/patch.py``): ``layers=P;bytes=B``,
#: B the file bytes they hold. Its own label, like the base's.
PATCH_LABEL = "org.pkgchunk.patch"
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


def _changed_nothing(
    plan: Plan, by_key: Mapping[str, Group], previous: PreviousPlan | None
) -> bool:
    """The same layers holding the same groups at the same versions as the previous build."""
    if previous is None:
        return False
    if [(la.name, tuple(la.groups)) for la in plan.layers] != [
        (la.name, tuple(la.groups)) for la in previous.layers
    ]:
        return False
    for layer in plan.layers:
        for key in layer.groups:
            old = previous.history.get(key)
            group = by_key.get(key)
            if old is None or old.version != (group.version if group is not None else ""):
                return False
    return True


def encode(plan: Plan, groups: Sequence[Group], previous: PreviousPlan | None) -> str:
    """The label value for this build: its plan plus updated per-group history.

    A build that changed nothing (same layers, same groups, same versions) records no new
    build: its label is the previous one, so a no-op rebuild gives the same config and
    manifest digest (bootc and GitOps tools take a new digest as an update)."""
    by_key = {g.key: g for g in groups}
    old = previous.history if previous is not None else {}
    unchanged = _changed_nothing(plan, by_key, previous)
    layers = []
    for layer in plan.layers:
        entries = []
        for key in layer.groups:
            h = old[key] if unchanged else _history(by_key.get(key), old.get(key))
            entries.append([key, h.seen, h.changed, h.version])
        layers.append([layer.name, entries])
    builds = (previous.builds if previous is not None else 0) + (0 if unchanged else 1)
    builds = min(MAX_COUNT, builds)
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


def _mtime_fields(value: str) -> tuple[str, dict[str, int], dict[str, str]]:
    policy, *rest = value.split(";")
    out: dict[str, int] = {}
    text: dict[str, str] = {}
    for item in rest:
        key, _, num = item.partition("=")
        digits = num[1:] if num.startswith("-") else num
        if key in ("epoch", "dirs") and digits.isdigit() and len(digits) <= 19:
            out[key] = int(num)
        elif key in ("carry", "carried"):
            text[key] = num
    return policy, out, text


def _carry_digest(value: str | None) -> str | None:
    algo, _, hexa = (value or "").partition(":")
    if algo == "sha256" and len(hexa) == 64 and all(c in "0123456789abcdef" for c in hexa):
        return value
    return None


def _layer_indices(value: str | None) -> tuple[int, ...]:
    """``3.7.12`` -> (3, 7, 12); malformed or out-of-range items are dropped."""
    out: set[int] = set()
    for item in (value or "").split(".")[:MAX_LAYERS]:
        if item.isdigit() and len(item) <= 5 and int(item) < MAX_LAYERS:
            out.add(int(item))
    return tuple(sorted(out))


@dataclass(frozen=True)
class MtimeRecord:
    """The mtime policy a build applied, so ``verify`` can re-derive it and the next build can
    carry the directories' limit ``T`` (``dirs``) over. ``dirs`` is recorded with clamp only.

    ``carry`` names (by manifest digest) the previous build whose mtimes identical entries
    took (``plan/carry.py``), so ``verify`` excuses exactly those; ``carried`` lists the
    indices of this build's layers holding such entries, which the next build must read to
    keep them. Both only with clamp; labels without them (older builds) parse as before."""

    policy: Policy
    source_date_epoch: int | None = None
    directory_epoch: int | None = None
    carry: str | None = None
    carried: tuple[int, ...] = ()

    def label(self) -> str:
        """``clamp``, ``clamp;epoch=E``, ``clamp;epoch=E;dirs=T;carry=sha256:D;carried=0.4`` ..."""
        out: str = self.policy
        if self.source_date_epoch is not None:
            out += f";epoch={self.source_date_epoch}"
        if self.directory_epoch is not None and self.policy == "clamp":
            out += f";dirs={self.directory_epoch}"
        if self.carry is not None and self.policy == "clamp":
            out += f";carry={self.carry}"
            if self.carried:
                out += ";carried=" + ".".join(str(i) for i in self.carried)
        return out

    @classmethod
    def parse(cls, value: str | None) -> MtimeRecord | None:
        """The record a label value holds, or None when it is not one pkgchunk wrote.

        Hostile input: malformed numbers are dropped field by field, a negative
        SOURCE_DATE_EPOCH is ignored, an unknown policy makes the whole value unknown, a
        ``carry`` that is not a sha256 digest is dropped (with its ``carried``)."""
        if not value:
            return None
        policy, fields, text = _mtime_fields(value)
        if policy not in POLICIES:
            return None
        epoch = fields.get("epoch")
        if epoch is not None and epoch < 0:
            epoch = None
        if policy != "clamp":
            return cls("keep", epoch)
        carry = _carry_digest(text.get("carry"))
        carried = _layer_indices(text.get("carried")) if carry is not None else ()
        return cls("clamp", epoch, fields.get("dirs"), carry, carried)


@dataclass(frozen=True)
class PatchRecord:
    """How many top layers patch the layers below them, and the file bytes they hold."""

    layers: int = 0
    bytes: int = 0

    def label(self) -> dict[str, str]:
        """The config label recording the patches ({} when there are none)."""
        return {PATCH_LABEL: f"layers={self.layers};bytes={self.bytes}"} if self.layers else {}

    @classmethod
    def parse(cls, value: object) -> PatchRecord | None:
        """None when ``value`` is not ``layers=P;bytes=B`` (hostile input: never raises)."""
        if not isinstance(value, str) or len(value) > 64:
            return None
        fields = {}
        for part in value.split(";"):
            key, _, num = part.partition("=")
            if key not in ("layers", "bytes") or key in fields:
                return None
            if not (num.isascii() and num.isdigit()) or len(num) > 18:
                return None
            fields[key] = int(num)
        if set(fields) != {"layers", "bytes"} or not 0 < fields["layers"] <= MAX_LAYERS:
            return None
        return cls(fields["layers"], fields["bytes"])


@dataclass(frozen=True)
class BuildRecord:
    """Everything pkgchunk recorded in an image's config labels, decoded once.

    The previous build reaches the planner, the mtime policy, ``diff`` and ``verify`` only
    as this record, never as a raw labels dict. ``warnings`` say what was ignored (a bad
    plan label means planning from scratch, never a crash)."""

    plan: PreviousPlan | None = None
    mtime: MtimeRecord | None = None
    warnings: tuple[str, ...] = ()
    #: Bottom layers kept from a base (0: the whole image was planned).
    base_layers: int = 0
    #: Top layers patching the previous build's layers (``plan/patch.py``).
    patch: PatchRecord = PatchRecord()

    @classmethod
    def from_labels(cls, labels: Mapping[str, object] | None) -> BuildRecord:
        if not labels:
            return cls()
        plan: PreviousPlan | None = None
        warnings: list[str] = []
        value = labels.get(LABEL)
        if value is not None:
            if not isinstance(value, str):
                warnings.append(f"{LABEL} label: not a string; planning from scratch")
            else:
                try:
                    plan = decode(value)
                except InputError as err:
                    warnings.append(f"{err}; planning from scratch")
        raw_mtime = labels.get(MTIME_LABEL)
        mtime = MtimeRecord.parse(raw_mtime) if isinstance(raw_mtime, str) else None
        base = 0
        raw_base = labels.get(BASE_LABEL)
        if raw_base is not None:
            base = parse_base(raw_base)
            if base < 0:
                warnings.append(f"{BASE_LABEL} label: not layers=N; ignored")
                base = 0
        patch = PatchRecord()
        raw_patch = labels.get(PATCH_LABEL)
        if raw_patch is not None:
            parsed = PatchRecord.parse(raw_patch)
            if parsed is None:
                warnings.append(f"{PATCH_LABEL} label: not layers=P;bytes=B; ignored")
            else:
                patch = parsed
        return cls(plan=plan, mtime=mtime, warnings=tuple(warnings), base_layers=base,
                   patch=patch)

    @property
    def carried_directory_epoch(self) -> int | None:
        """``T`` for the next clamp build (None when this build recorded none)."""
        if self.mtime is None or self.mtime.policy != "clamp":
            return None
        return self.mtime.directory_epoch


def parse_base(value: object) -> int:
    """``layers=K`` -> K; -1 when the value is not that (hostile input: never raises)."""
    if not isinstance(value, str):
        return -1
    key, _, num = value.partition("=")
    if key != "layers" or not (num.isascii() and num.isdigit()) or len(num) > 6:
        return -1
    return int(num)


def base_labels(base_layers: int) -> dict[str, str]:
    """The label recording a kept base ({} when there is none)."""
    return {BASE_LABEL: f"layers={base_layers}"} if base_layers else {}


def record_labels(plan_label: str, mtime: MtimeRecord) -> dict[str, str]:
    """The config labels that record a build (the inverse of :meth:`BuildRecord.from_labels`)."""
    return {LABEL: plan_label, MTIME_LABEL: mtime.label()}
