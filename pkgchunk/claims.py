"""What an output image's build record may excuse when ``verify INPUT OUTPUT`` compares them.

The output is the image under test, so its labels are claims, never facts. Each claim is
checked against what the INPUT gives (and what the person verifying states: the
``--source-date-epoch`` the build was given, the ``--prev`` build it was made against):

- ``org.pkgchunk.mtime`` may only excuse mtimes moved backwards, to the values its policy
  derives from the INPUT (plan/mtimes.py). Its directory limit ``dirs=T`` must be the one the
  input gives, or the named previous build's; its ``epoch=E`` must be the one stated. A label
  that says more than that is itself a difference, and is not applied.
- ``org.pkgchunk.plan`` must decode and name as many layers as the output has above its
  kept base.
- ``org.pkgchunk.edits`` (bootc images, ``--prune``, ``--label``) may only excuse the
  INPUT's paths under the prefixes it names (left out, and counted), hard links that reached
  into them split by owner as rechunk splits them, and the labels it says it set or removed.
- ``org.pkgchunk.patch`` (``--patch-layers``) may only say how many top layers the plan label
  does not describe. It excuses no file: the output, patches and all, must flatten to the
  INPUT under the policy, and what lies below a patch has the mtimes the previous build
  wrote, which the mtime record's ``carry`` lets ``verify`` check against that build.
- ``org.pkgchunk.base`` (``--keep-base``) may only say that the output's bottom layers are the
  INPUT's own: the policy then applies to what is above them, and the base stays as it is.

Nothing else is excused: the expected tree starts as the INPUT and only the steps below
change it. More steps plug in by appending to :data:`STEPS` (a step reads the record,
vouches for the labels it checked, changes ``expected`` only by what its policy can produce
and adds a problem for anything more).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pkgchunk import bootc
from pkgchunk.errors import InputError
from pkgchunk.pkgdb.model import Ownership
from pkgchunk.pkgdb.ownership import collect
from pkgchunk.plan import mtimes
from pkgchunk.plan.above import as_written
from pkgchunk.plan.record import (
    BASE_LABEL,
    LABEL,
    MTIME_LABEL,
    PATCH_LABEL,
    BuildRecord,
    MtimeRecord,
    PatchRecord,
    decode,
)
from pkgchunk.prune import owner_key, prune, split_links
from pkgchunk.tree import FileTree


@dataclass(frozen=True)
class Stated:
    """What the person verifying says about the build: never read from the output."""

    #: The SOURCE_DATE_EPOCH the build was given.
    source_date_epoch: int | None = None
    #: The record of the previous build it was made against (``--prev``), and its name.
    previous: BuildRecord | None = None
    previous_ref: str | None = None


@dataclass
class Claims:
    """The state the steps share: ``expected`` is the INPUT as the output's checked policy
    writes it; ``problems`` are claims the record cannot back (config-level differences)."""

    input_tree: FileTree
    output_labels: Mapping[str, str]
    #: None when unknown (an image mounted in place): then the plan's count is not checked.
    output_layers: int | None
    stated: Stated
    expected: FileTree
    problems: list[str] = field(default_factory=list)
    #: Output labels a step has checked (the rest are compared with the input's as they are).
    vouched: set[str] = field(default_factory=set)
    #: The INPUT's bottom layers flattened alone, when the output claims to keep them.
    input_base: FileTree | None = None
    #: How many bottom layers the output kept as the INPUT's (checked by check_base).
    base_layers: int = 0
    #: Paths of the INPUT left out, per recorded prefix (check_edits).
    pruned: list[tuple[str, int]] = field(default_factory=list)
    _ownership: Ownership | None = None

    @property
    def record(self) -> BuildRecord:
        return BuildRecord.from_labels(self.output_labels)

    def ownership(self) -> Ownership:
        """The INPUT's package ownership (what the clamp policy derives times from)."""
        if self._ownership is None:
            self._ownership = collect(self.input_tree, ignore_errors=True)
        return self._ownership


Step = Callable[[Claims], None]


def check_edits(claims: Claims) -> None:
    """What the output says it left out is left out of the INPUT for every later step (a
    kept base stays whole), links into it split by owner; the labels it set or removed
    are vouched for (a removed one only when the output really lacks it)."""
    raw = claims.output_labels.get(bootc.EDITS_LABEL)
    if raw is None:
        return
    claims.vouched.add(bootc.EDITS_LABEL)
    try:
        edits = bootc.decode_edits(raw)
    except InputError as err:
        claims.problems.append(str(err))
        return
    keep = (claims.input_base.entries if claims.input_base is not None
            and BASE_LABEL in claims.output_labels else {})
    pruned = prune(claims.input_tree, edits.prune, keep=keep)
    tree = pruned.tree
    if pruned.loose:
        claims._ownership = collect(tree, ignore_errors=True)
        tree = split_links(tree, pruned.loose, owner_key(claims._ownership.owners))
    elif pruned.removed:
        claims._ownership = None
    claims.input_tree = claims.expected = tree
    claims.pruned = [(str(p), n) for p, n in pruned.counts]
    claims.vouched.update(edits.labels_set)
    claims.vouched.update(k for k in edits.labels_removed if k not in claims.output_labels)


def check_base(claims: Claims) -> None:
    """A kept base must be the INPUT's own bottom layers (verify flattened them alone)."""
    raw = claims.output_labels.get(BASE_LABEL)
    if raw is None:
        return
    claims.vouched.add(BASE_LABEL)
    kept = claims.record.base_layers
    if kept == 0 or claims.input_base is None:
        claims.problems.append(
            f"label {BASE_LABEL}={raw!r} claims base layers the input does not have"
        )
        return
    claims.base_layers = kept
    claims.expected = as_written(claims.input_tree, claims.input_base, claims.ownership(), None)


def check_mtime_policy(claims: Claims) -> None:
    """Apply the recorded mtime policy to the INPUT, with only the parameters it can have."""
    raw = claims.output_labels.get(MTIME_LABEL)
    if raw is None:
        return
    claims.vouched.add(MTIME_LABEL)
    record = MtimeRecord.parse(raw) if isinstance(raw, str) else None
    if record is None:
        claims.problems.append(f"label {MTIME_LABEL}={raw!r} is not a policy pkgchunk writes")
        return
    if record.label() != raw:
        claims.problems.append(
            f"label {MTIME_LABEL}={raw!r} says more than its policy has "
            f"(pkgchunk writes {record.label()!r})"
        )
        return
    epoch = record.source_date_epoch
    stated = claims.stated.source_date_epoch
    if epoch is not None and epoch != stated:
        claims.problems.append(
            f"label {MTIME_LABEL} clamps mtimes to SOURCE_DATE_EPOCH={epoch}, which the input "
            f"does not give: not applied (pass --source-date-epoch {epoch} if the build was "
            "given it)"
        )
        epoch = None
    dirs = None
    if record.policy == "clamp":
        previous = claims.stated.previous
        carried = previous.carried_directory_epoch if previous is not None else None
        dirs = mtimes.directory_epoch(claims.input_tree, claims.ownership(), carried)
        if record.directory_epoch != dirs:
            source = (
                f"the previous build {claims.stated.previous_ref} gives"
                if carried is not None else "the input gives"
            )
            hint = "" if previous is not None else " (pass --prev if it was carried from one)"
            claims.problems.append(
                f"label {MTIME_LABEL} limits directory mtimes to dirs={record.directory_epoch}"
                f", {source} {dirs}{hint}: applied {dirs}"
            )
    if claims.base_layers and claims.input_base is not None:
        # Only what is above the kept base was written under the policy.
        claims.expected = as_written(
            claims.input_tree, claims.input_base, claims.ownership(),
            MtimeRecord(record.policy, epoch, dirs),
        )
        return
    claims.expected = mtimes.apply(
        claims.expected, claims.ownership(), policy=record.policy,
        source_date_epoch=epoch, directory_epoch=dirs,
    )


def check_plan(claims: Claims) -> None:
    """The plan label must decode and describe the output's layers."""
    raw = claims.output_labels.get(LABEL)
    if raw is None:
        return
    claims.vouched.add(LABEL)
    try:
        plan = decode(raw) if isinstance(raw, str) else None
    except InputError as err:
        claims.problems.append(str(err))
        return
    patches = 0
    raw_patch = claims.output_labels.get(PATCH_LABEL)
    if raw_patch is not None:
        claims.vouched.add(PATCH_LABEL)
        record = PatchRecord.parse(raw_patch)
        if record is None:
            claims.problems.append(f"label {PATCH_LABEL}={raw_patch!r} is not layers=P;bytes=B")
        else:
            patches = record.layers
    if plan is None:
        claims.problems.append(f"label {LABEL}: not a string")
        return
    if claims.output_layers is None:
        return
    planned = claims.output_layers - claims.base_layers - patches
    if len(plan.layers) != planned:
        where = (" above its kept base" if claims.base_layers else "") + (
            f" below its {patches} patch layers" if patches else "")
        claims.problems.append(
            f"label {LABEL} describes {len(plan.layers)} layers, the image has {planned}{where}"
        )


#: Run in order; other policies (carried mtimes, pruned paths) add theirs here.
STEPS: list[Step] = [check_edits, check_base, check_mtime_policy, check_plan]


def expected_output(
    input_tree: FileTree,
    output_labels: Mapping[str, str],
    output_layers: int | None,
    stated: Stated | None = None,
    input_base: FileTree | None = None,
) -> Claims:
    """The INPUT as the output's record may have written it, and what that record claims
    beyond what it can produce."""
    claims = Claims(
        input_tree=input_tree, output_labels=output_labels, output_layers=output_layers,
        stated=stated or Stated(), expected=input_tree, input_base=input_base,
    )
    for step in STEPS:
        step(claims)
    return claims
