"""Which packages and paths each rules group and bucket took in one image.

For ``pkgchunk rules check FILE SRC`` and for the warning every plan gives about a
rules group that took nothing: a typo (``kernal*``) is otherwise silently accepted,
and the packages it meant to claim quietly form their own groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pkgchunk.pkgdb.model import Package
from pkgchunk.plan.groups import BUCKET_PREFIX, RULE_PREFIX, Group
from pkgchunk.plan.rules import Rules


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """One rules entry and what it took: package names (sorted), paths and bytes."""

    kind: Literal["group", "bucket"]
    name: str
    origin: str
    packages: tuple[str, ...]
    paths: int
    bytes: int


def rule_matches(
    rules: Rules, groups: Sequence[Group], packages: Mapping[str, Package]
) -> tuple[RuleMatch, ...]:
    """Every rules group, then every bucket, in file order (merged order with extends)."""
    by_key = {g.key: g for g in groups}
    out: list[RuleMatch] = []
    entries: list[tuple[Literal["group", "bucket"], str, str, str]] = [
        ("group", r.name, r.origin, RULE_PREFIX + r.name) for r in rules.groups
    ]
    entries += [("bucket", b.name, b.origin, BUCKET_PREFIX + b.name) for b in rules.buckets]
    for kind, name, origin, key in entries:
        g = by_key.get(key)
        names = sorted({packages[k].name for k in g.packages if k in packages}) if g else []
        out.append(
            RuleMatch(kind, name, origin, tuple(names), len(g.paths) if g else 0,
                      g.bytes if g else 0)
        )
    return tuple(out)


def unmatched_warnings(rules: Rules, groups: Sequence[Group]) -> tuple[str, ...]:
    """One warning per rules group that took no package and no path in this image.

    Buckets and the groups of shipped files are left out: they are written for a whole
    image family, so one image lacking a kernel or an initramfs is normal.
    """
    present = {g.key for g in groups}
    return tuple(
        f"{r.origin or rules.source}: rules group {r.name!r} matches nothing in this image"
        " (a typo in its globs?)"
        for r in rules.groups
        if not r.shipped and RULE_PREFIX + r.name not in present
    )
