"""``pkgchunk rules check FILE [SRC]``: validate a rules file and, given an image, show
what each of its groups and buckets takes there (the loop a maintainer runs while
editing rules, without planning or writing anything)."""

from __future__ import annotations

from dataclasses import dataclass

from pkgchunk.io import open_image
from pkgchunk.pkgdb.ownership import collect
from pkgchunk.plan.groups import build_groups
from pkgchunk.plan.matches import RuleMatch, rule_matches, unmatched_warnings
from pkgchunk.plan.rules import Rules, load_rules


@dataclass(frozen=True)
class RulesCheck:
    rules: Rules
    image: str | None
    matches: tuple[RuleMatch, ...]
    warnings: tuple[str, ...]


def check_rules(
    rules_arg: str, src: str | None = None, *, ignore_pkgdb_errors: bool = False
) -> RulesCheck:
    """Load (validate) the rules; with ``src``, group that image's files by them."""
    rules = load_rules(rules_arg)
    if src is None:
        return RulesCheck(rules, None, (), ())
    with open_image(src) as image:
        ownership = collect(image.tree, ignore_errors=ignore_pkgdb_errors)
        groups = build_groups(image.tree, ownership, rules, derived="follow")
        matches = rule_matches(rules, groups, ownership.packages)
        warnings = ownership.warnings + unmatched_warnings(rules, groups)
        return RulesCheck(rules, str(image.ref), matches, warnings)
