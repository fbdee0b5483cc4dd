"""bootc images: how to recognise one, what to leave out, which labels to drop, and what
rechunk changed on purpose (recorded in the output so ``verify`` can tell).

A Fedora/CentOS bootc base image is ostree-encapsulated: its layers carry the ostree
object store ``/sysroot/ostree/repo`` and every ``/usr`` file is a hard link to its
object. bootc does not need the store in the image (it imports layers file by file
since 1.1.3) and its labels ``ostree.commit`` / ``ostree.final-diffid`` no longer
describe a rechunked image; a stale ``ostree.final-diffid`` breaks ``bootc install``
and ``upgrade``. So for a bootc image rechunk leaves out ``/sysroot/ostree`` (``/sysroot``
itself stays: ``bootc container lint`` wants it) and drops those two labels, like
rpm-ostree's build-chunked-oci and chunkah's documented
``--prune /sysroot/ --label ostree.commit- --label ostree.final-diffid-``.

What was left out and which labels were edited is recorded in the config label
``org.pkgchunk.edits`` (:func:`encode_edits` / :func:`decode_edits`): ``verify``
accepts exactly those changes and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pkgchunk.errors import InputError
from pkgchunk.prune import Prefix, parse_prefix
from pkgchunk.tree import FileTree

#: Either label makes an image a bootc image (bootc requires one of them).
BOOTC_LABELS = ("containers.bootc", "ostree.bootable")
#: Labels describing the ostree commit the layers held; stale once the farm is gone.
OSTREE_LABELS = ("ostree.commit", "ostree.final-diffid")
OSTREE_REPO = "sysroot/ostree/repo"
#: What a bootc image loses by default: the whole ostree store (``/sysroot`` stays).
FARM = Prefix("sysroot/ostree")
#: Docker's overlay2 stacks at most 128 lower directories on older versions (and moby's
#: layer store stops at 125 deep); containers-storage allows 500.
DOCKER_MAX_LAYERS = 127

EDITS_LABEL = "org.pkgchunk.edits"
EDITS_VERSION = 1
MAX_EDITS_CHARS = 1 << 20
MAX_LABEL_KEY = 1024


def detect(labels: Mapping[str, Any], tree: FileTree) -> str | None:
    """Why this is a bootc image (for the one line rechunk prints), or None."""
    found = [k for k in BOOTC_LABELS if k in labels]
    if found:
        return "label " + ", ".join(found)
    entry = tree.get(OSTREE_REPO)
    if entry is not None and entry.kind == "dir":
        return f"/{OSTREE_REPO} present"
    return None


@dataclass(frozen=True, slots=True)
class LabelEdit:
    """``KEY=VALUE`` (set) or ``KEY-`` (remove: ``value`` None)."""

    key: str
    value: str | None


def parse_label_edit(text: str) -> LabelEdit:
    """``KEY=VALUE`` or ``KEY-``, as chunkah's and buildah's ``--label`` take them."""
    key, eq, value = text.partition("=")
    if eq:
        if not key:
            raise InputError(f"--label {text!r}: empty key")
        return LabelEdit(key, value)
    if text.endswith("-") and len(text) > 1:
        return LabelEdit(text[:-1], None)
    raise InputError(f"--label {text!r}: expected KEY=VALUE or KEY- (remove)")


@dataclass(frozen=True)
class Edits:
    """What rechunk changed on purpose: pruned prefixes, removed and set label keys."""

    prune: tuple[Prefix, ...] = ()
    labels_removed: tuple[str, ...] = ()
    labels_set: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.prune or self.labels_removed or self.labels_set)


def encode_edits(edits: Edits) -> str:
    """The ``org.pkgchunk.edits`` value: compact JSON, sorted (reproducible)."""
    doc = {
        "v": EDITS_VERSION,
        "prune": [str(p) for p in edits.prune],
        "labels": {"removed": sorted(edits.labels_removed), "set": sorted(edits.labels_set)},
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def _fail(problem: str) -> InputError:
    return InputError(f"{EDITS_LABEL} label: {problem}")


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and 0 < len(v) <= MAX_LABEL_KEY for v in value
    ):
        raise _fail(f"{what} must be a list of non-empty strings")
    return list(value)


def decode_edits(value: str | None) -> Edits:
    """Parse a recorded ``org.pkgchunk.edits`` value (None: nothing edited). The label
    comes from an image, so it is checked; a bad one is an InputError."""
    if value is None:
        return Edits()
    if not isinstance(value, str) or len(value) > MAX_EDITS_CHARS:
        raise _fail("not a string of reasonable size")
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError) as err:
        raise _fail(f"not JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("v") != EDITS_VERSION or isinstance(
        doc.get("v"), bool
    ):
        raise _fail(f"unsupported format (this pkgchunk writes version {EDITS_VERSION})")
    if set(doc) - {"v", "prune", "labels"}:
        raise _fail("unknown fields")
    labels = doc.get("labels", {})
    if not isinstance(labels, dict) or set(labels) - {"removed", "set"}:
        raise _fail("labels must be {removed: [...], set: [...]}")
    try:
        prune = tuple(parse_prefix(p) for p in _strings(doc.get("prune", []), "prune"))
    except InputError as err:
        raise _fail(str(err)) from None
    return Edits(
        prune=prune,
        labels_removed=tuple(_strings(labels.get("removed", []), "labels.removed")),
        labels_set=tuple(_strings(labels.get("set", []), "labels.set")),
    )


@dataclass(frozen=True)
class Policy:
    """What to leave out and which labels to change, decided for one input image."""

    bootc: str | None
    edits: Edits
    label_values: tuple[tuple[str, str], ...] = ()

    @property
    def note(self) -> str | None:
        """The one line plan/rechunk print about a bootc image."""
        if self.bootc is None:
            return None
        if FARM in self.edits.prune:
            dropped = [k for k in OSTREE_LABELS if k in self.edits.labels_removed]
            labels = f", dropping labels {', '.join(dropped)}" if dropped else ""
            return (f"bootc image ({self.bootc}): leaving out /sysroot/ostree{labels}"
                    " (--keep-sysroot keeps them)")
        return f"bootc image ({self.bootc}): keeping /sysroot/ostree (--keep-sysroot)"


def decide(
    labels: Mapping[str, Any],
    tree: FileTree,
    *,
    keep_sysroot: bool = False,
    prune: Sequence[str] = (),
    label_edits: Sequence[str] = (),
) -> Policy:
    """The prune and label policy for an input: bootc defaults, then the user's
    ``--prune`` and ``--label`` (later edits of one key win)."""
    reason = detect(labels, tree)
    prefixes: list[Prefix] = []
    removed: dict[str, None] = {}
    values: dict[str, str] = {}
    if reason is not None and not keep_sysroot:
        prefixes.append(FARM)
        for key in OSTREE_LABELS:
            if key in labels:
                removed[key] = None
    prefixes.extend(parse_prefix(p) for p in prune)
    for text in label_edits:
        edit = parse_label_edit(text)
        if edit.value is None:
            values.pop(edit.key, None)
            removed[edit.key] = None
        else:
            removed.pop(edit.key, None)
            values[edit.key] = edit.value
    edits = Edits(
        prune=tuple(dict.fromkeys(prefixes)),
        labels_removed=tuple(sorted(removed)),
        labels_set=tuple(sorted(values)),
    )
    return Policy(reason, edits, tuple(sorted(values.items())))


def edit_config(config: Mapping[str, Any], policy: Policy) -> dict[str, Any]:
    """A copy of the image config with the policy's labels removed and set. An
    ``org.pkgchunk.edits`` the input inherited from an earlier rechunk goes too: it
    described that run, not this one (rechunk adds this run's own)."""
    out = dict(config)
    inner = dict(out.get("config") or {})
    labels = inner.get("Labels")
    if not isinstance(labels, dict):
        labels = {}
    if not (policy.edits.labels_removed or policy.label_values or EDITS_LABEL in labels):
        return out
    labels = dict(labels)
    labels.pop(EDITS_LABEL, None)
    for key in policy.edits.labels_removed:
        labels.pop(key, None)
    labels.update(policy.label_values)
    inner["Labels"] = labels
    out["config"] = inner
    return out


def layer_budget_warning(budget: int, planned: int) -> str | None:
    """One warning when the budget goes over what older Docker runs; never a refusal."""
    if budget <= DOCKER_MAX_LAYERS:
        return None
    return (
        f"--max-layers {budget} (plan: {planned} layers) is above {DOCKER_MAX_LAYERS}: Docker's"
        " overlay2 on older versions refuses images deeper than that (moby's layer store stops"
        " at 125), and a base image's layers count too; podman/containers-storage allow 500"
    )
