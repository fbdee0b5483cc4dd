"""``extends:``: a rules file on top of another, errors still pointing at their own file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgchunk.errors import RulesError
from pkgchunk.plan.rules import load_rules

REPO = Path(__file__).resolve().parents[2]


def test_extends_a_shipped_file_adds_and_overrides_by_name(tmp_path: Path) -> None:
    base = load_rules("fedora-bootc")
    path = tmp_path / "mine.yaml"
    path.write_text(
        "version: 1\n"
        "extends: fedora-bootc\n"
        "max_layers: 40\n"
        "groups:\n"
        "  - name: myapp\n"              # new: tried before the base's groups
        "    packages: ['myapp*']\n"
        "  - name: kernel\n"             # replaces the base's kernel group in place
        "    sources: [kernel]\n"
        "    dedicated: false\n"
        "buckets:\n"
        "  - name: opt\n"
        "    paths: [opt/*]\n"
        "  - name: etc\n"                # replaces the base's etc bucket in place
        "    paths: [etc/*, usr/etc/*]\n"
    )
    rules = load_rules(path)
    assert rules.extends == (base.source,)
    assert rules.max_layers == 40
    assert (rules.group_by, rules.big_file_threshold) == (base.group_by, base.big_file_threshold)
    names = [g.name for g in rules.groups]
    assert names == ["myapp", *[g.name for g in base.groups]]
    kernel = rules.groups[names.index("kernel")]
    assert kernel.sources == ("kernel",) and not kernel.dedicated and kernel.packages == ()
    assert kernel.origin == f"{path}:7"
    firmware = rules.groups[names.index("firmware")]
    assert firmware == next(g for g in base.groups if g.name == "firmware")
    assert firmware.origin.startswith(base.source + ":")
    bnames = [b.name for b in rules.buckets]
    assert bnames == ["opt", *[b.name for b in base.buckets]]
    assert rules.buckets[bnames.index("etc")].paths == ("etc/*", "usr/etc/*")
    assert rules.buckets[-1].catch_all


def test_extends_a_path_relative_to_the_extending_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(
        "version: 1\ngroup_by: name\ngroups:\n  - name: a\n    packages: [a]\n"
        "buckets:\n  - name: rest\n"
    )
    (tmp_path / "sub" / "top.yaml").write_text(
        "version: 1\nextends: ../base.yaml\nbuckets:\n  - name: all\n"
    )
    rules = load_rules(tmp_path / "sub" / "top.yaml")
    assert rules.group_by == "name"
    assert [g.name for g in rules.groups] == ["a"]
    assert [b.name for b in rules.buckets] == ["all"]  # my catch-all replaces the base's


def test_errors_point_at_the_file_they_come_from(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("version: 1\ngroups:\n  - name: a\n    packages: a\n")
    (tmp_path / "top.yaml").write_text("version: 1\nextends: base.yaml\n")
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path / "top.yaml")
    assert str(info.value) == (
        f"{tmp_path}/base.yaml:4:15: group 'a': packages must be a list, not a string"
    )
    (tmp_path / "top.yaml").write_text("version: 1\nextends: nope.yaml\n")
    with pytest.raises(RulesError, match=rf"^{tmp_path}/top.yaml:2:10: extends: .*nope.yaml"):
        load_rules(tmp_path / "top.yaml")
    (tmp_path / "top.yaml").write_text("version: 1\nextends: debain\n")
    with pytest.raises(RulesError, match=r"top.yaml:2:10: extends: debain: no such rules file"):
        load_rules(tmp_path / "top.yaml")


def test_extends_cycles_and_kind_clashes_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("version: 1\nextends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("version: 1\nextends: a.yaml\n")
    with pytest.raises(RulesError, match=r"b.yaml:2:10: extends: 'a.yaml' extends this file"):
        load_rules(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text(
        "version: 1\nextends: debian\ngroups:\n  - name: etc\n    paths: [etc/*]\n"
    )
    with pytest.raises(RulesError, match=r"c.yaml:4:11: name 'etc' is a bucket in .*debian"):
        load_rules(tmp_path / "c.yaml")
