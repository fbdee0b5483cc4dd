"""The planner: placement, cost, budget, dedicated groups, stability with a previous plan."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from pkgchunk.errors import RulesError
from pkgchunk.pkgdb.ownership import collect
from pkgchunk.plan.frequency import probabilities
from pkgchunk.plan.groups import Group, build_groups
from pkgchunk.plan.planner import (
    GroupHistory,
    Plan,
    PreviousLayer,
    PreviousPlan,
    plan,
    to_layer_specs,
)
from pkgchunk.plan.record import decode, encode
from pkgchunk.plan.rules import load_rules
from pkgchunk.tree import Entry, FileTree, encode_path
from tests.helpers import shared_fixtures
from tests.plan.test_groups import debian_tree

MB = 1 << 20


def grp(key: str, nbytes: int, *, dedicated: bool = False, paths: int = 1) -> Group:
    return Group(
        key=key,
        kind="package",
        packages=(f"{key}:amd64",),
        versions=(f"{key}=1",),
        paths=tuple(f"{key}/f{i}" for i in range(paths)),
        bytes=nbytes,
        dedicated=dedicated,
    )


def cost(layers: Sequence[Sequence[str]], size: Mapping[str, int], p: Mapping[str, float]) -> float:
    """Expected pulled bytes, written out from the definition."""
    total = 0.0
    for layer in layers:
        unchanged = 1.0
        for k in layer:
            unchanged *= 1.0 - p[k]
        total += sum(size[k] for k in layer) * (1.0 - unchanged)
    return total


def layout(result: Plan) -> dict[str, tuple[str, ...]]:
    return {layer.name: layer.groups for layer in result.layers}


def check_plan(result: Plan, groups: Sequence[Group], max_layers: int) -> None:
    placed = [k for layer in result.layers for k in layer.groups]
    assert sorted(placed) == sorted(g.key for g in groups)
    assert len(result.layers) <= max_layers
    assert len({layer.name for layer in result.layers}) == len(result.layers)
    by_key = {g.key: g for g in groups}
    for layer in result.layers:
        assert layer.groups
        assert layer.bytes == sum(by_key[k].bytes for k in layer.groups)
        expected = sorted((p for k in layer.groups for p in by_key[k].paths), key=encode_path)
        assert list(layer.paths) == expected


def docker_cost(layers: Sequence[tuple[int, float]]) -> float:
    """Expected bytes Docker's classic store pulls: a layer is pulled when it or any
    layer below it changed (layers as (bytes, change probability), bottom first)."""
    total, unchanged_below = 0.0, 1.0
    for nbytes, p in layers:
        unchanged_below *= 1.0 - p
        total += nbytes * (1.0 - unchanged_below)
    return total


def assert_docker_order(result: Plan) -> None:
    order = [(la.bytes, la.change_probability) for la in result.layers]
    best = docker_cost(order)
    for i in range(len(order) - 1):
        swapped = [*order[:i], order[i + 1], order[i], *order[i + 2 :]]
        assert best <= docker_cost(swapped) * (1 + 1e-12)


def test_nothing_to_plan() -> None:
    assert plan([], {}, 5) == Plan(())


def test_big_volatile_groups_get_layers_small_stable_ones_share() -> None:
    groups = [grp("kernel", 200 * MB), grp("firmware", 300 * MB), grp("glibc", 20 * MB)]
    groups += [grp(f"lib{i:02}", 100_000) for i in range(30)]
    p = {"kernel": 0.9, "firmware": 0.3, "glibc": 0.4} | {f"lib{i:02}": 0.01 for i in range(30)}
    result = plan(groups, p, 5)
    check_plan(result, groups, 5)
    where = result.layer_of()
    for big in ("kernel", "firmware", "glibc"):
        assert layout(result)[where[big]] == (big,)
    # Docker pulls everything above the first changed layer: no swap of two
    # neighbours lowers that expected cost
    assert_docker_order(result)
    sizes = {g.key: g.bytes for g in groups}
    assert result.expected_bytes() == pytest.approx(cost(list(layout(result).values()), sizes, p))
    # an apko-style plan (largest groups alone, the rest in one overflow layer) costs more
    ranked = sorted(groups, key=lambda g: -g.bytes)
    overflow = [[g.key] for g in ranked[:4]] + [[g.key for g in ranked[4:]]]
    assert result.expected_bytes() < cost(overflow, sizes, p)


def test_budget_is_respected_and_each_layer_named_after_its_biggest_group() -> None:
    groups = [grp(f"g{i:03}", (i + 1) * MB) for i in range(100)]
    p = {g.key: 0.05 + (i % 7) / 10 for i, g in enumerate(groups)}
    for n in (1, 2, 7, 64, 200):
        result = plan(groups, p, n, min_gain=0)
        check_plan(result, groups, n)
        assert len(result.layers) == min(n, 100)
        sizes = {g.key: g.bytes for g in groups}
        for layer in result.layers:
            assert layer.name == max(layer.groups, key=lambda k: (sizes[k], k))


def test_tiny_splits_are_not_worth_a_layer() -> None:
    groups = [grp("a", 1000), grp("b", 1000), grp("c", 50 * MB)]
    p = {"a": 0.5, "b": 0.5, "c": 0.5}
    assert len(plan(groups, p, 10).layers) == 2  # a and b share: splitting saves < 64 KiB
    assert len(plan(groups, p, 10, min_gain=0).layers) == 3


def test_dedicated_groups_stay_alone() -> None:
    groups = [grp("kernel", 10, dedicated=True), grp("initramfs", 10, dedicated=True)]
    groups += [grp(f"x{i}", 10) for i in range(5)]
    p = {g.key: 0.0 for g in groups}
    result = plan(groups, p, 3)
    check_plan(result, groups, 3)
    assert layout(result)["kernel"] == ("kernel",)
    assert layout(result)["initramfs"] == ("initramfs",)
    with pytest.raises(RulesError, match="max_layers 2: 2 dedicated groups leave no layer"):
        plan(groups, p, 2)
    with pytest.raises(RulesError, match="at least one layer"):
        plan(groups, p, 0)


def test_groups_without_paths_cannot_change_a_layer() -> None:
    groups = [grp("big", 100 * MB), grp("meta", 0, paths=0)]
    result = plan(groups, {"big": 0.01, "meta": 1.0}, 5, min_gain=0)
    check_plan(result, groups, 5)
    assert len(result.layers) == 1
    assert result.layers[0].change_probability == pytest.approx(0.01)


def _partitions(items: list[str], k: int) -> Iterator[list[list[str]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest, k):
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]
        if len(part) < k:
            yield [[first], *part]


def test_close_to_the_optimum_on_small_instances() -> None:
    """Against exhaustive search over every partition into at most k layers."""
    rnd = random.Random(1234)
    for _ in range(150):
        n, k = rnd.randint(2, 7), rnd.randint(1, 4)
        groups = [
            grp(f"g{i}", rnd.choice([1, 10**3, 10**5, 10**7]) * rnd.randint(1, 9)) for i in range(n)
        ]
        p = {g.key: rnd.random() ** 2 for g in groups}
        sizes = {g.key: g.bytes for g in groups}
        best = min(cost(part, sizes, p) for part in _partitions([g.key for g in groups], k))
        got = plan(groups, p, k, min_gain=0)
        check_plan(got, groups, k)
        assert got.expected_bytes() <= best * 1.05 + 1e-6


# --------------------------------------------------------------------------- previous plans


def previous_of(result: Plan) -> PreviousPlan:
    return PreviousPlan(
        layers=tuple(PreviousLayer(layer.name, layer.groups) for layer in result.layers)
    )


def test_existing_groups_keep_their_layers_new_ones_go_where_they_cost_least() -> None:
    groups = [grp("kernel", 200 * MB), grp("glibc", 30 * MB)]
    groups += [grp(f"lib{i}", 200_000) for i in range(10)]
    p = {"kernel": 0.9, "glibc": 0.3} | {f"lib{i}": 0.02 for i in range(10)}
    first = plan(groups, p, 6)
    check_plan(first, groups, 6)
    assert len(first.layers) < 6

    new = [grp("llvm", 150 * MB), grp("tiny-stable", 10_000), grp("node", 80 * MB)]
    p2 = p | {"llvm": 0.2, "tiny-stable": 0.01, "node": 0.5}
    second = plan(groups + new, p2, 6, previous_of(first))
    check_plan(second, groups + new, 6)
    before, after = layout(first), layout(second)
    for name, members in before.items():
        assert set(members) <= set(after[name])  # nothing left its layer
    where = second.layer_of()
    assert where["llvm"] != where["node"]  # not all new groups in one overflow layer
    assert after[where["llvm"]] == ("llvm",) and after[where["node"]] == ("node",)
    # the tiny stable group joins an existing stable layer rather than a volatile one
    assert where["tiny-stable"] in before and "kernel" not in after[where["tiny-stable"]]
    # existing layers keep their relative order; new ones are placed by stability
    names = [layer.name for layer in second.layers]
    kept = [n for n in names if n in before]
    assert kept == [layer.name for layer in first.layers]
    assert_docker_order(first)


def test_removed_groups_free_their_place_without_moving_others() -> None:
    groups = [grp(f"g{i}", (i + 1) * MB) for i in range(12)]
    p = {g.key: (i % 4) / 4 + 0.05 for i, g in enumerate(groups)}
    first = plan(groups, p, 5)
    gone = {first.layers[0].groups[0], first.layers[-1].groups[-1]}
    rest = [g for g in groups if g.key not in gone]
    second = plan(rest, p, 5, previous_of(first))
    check_plan(second, rest, 5)
    expected = {
        name: tuple(k for k in members if k not in gone)
        for name, members in layout(first).items()
        if any(k not in gone for k in members)
    }
    assert layout(second) == expected
    assert [la.name for la in second.layers] == [n for n in layout(first) if n in expected]


def test_unchanged_input_gives_the_same_plan_even_when_probabilities_drift() -> None:
    groups = [grp(f"g{i}", (i + 1) * 3 * MB) for i in range(20)]
    p = {g.key: ((i * 7) % 10) / 10 for i, g in enumerate(groups)}
    first = plan(groups, p, 6)
    drift = {k: 1.0 - v for k, v in p.items()}
    second = plan(groups, drift, 6, previous_of(first))
    assert [(la.name, la.groups) for la in second.layers] == [
        (la.name, la.groups) for la in first.layers
    ]


def test_a_smaller_budget_merges_existing_layers() -> None:
    groups = [grp(f"g{i}", (i + 1) * MB) for i in range(10)]
    p = {g.key: 0.1 * (i % 5) + 0.01 for i, g in enumerate(groups)}
    first = plan(groups, p, 8, min_gain=0)
    assert len(first.layers) == 8
    second = plan(groups, p, 3, previous_of(first))
    check_plan(second, groups, 3)
    assert {la.name for la in second.layers} <= set(layout(first))


def test_a_group_that_becomes_dedicated_moves_out() -> None:
    groups = [grp("a", MB), grp("b", MB), grp("c", MB)]
    prev = PreviousPlan(layers=(PreviousLayer("shared", ("a", "b", "c")),))
    now = [grp("a", MB, dedicated=True), grp("b", MB), grp("c", MB)]
    result = plan(now, {"a": 0.1, "b": 0.1, "c": 0.1}, 4, prev)
    check_plan(result, now, 4)
    assert layout(result)["shared"] == ("b", "c")
    assert layout(result)["a"] == ("a",)
    del groups


def test_layer_specs_carry_packages_and_history_comment() -> None:
    many = Group(
        key="src/big",
        kind="package",
        packages=tuple(f"p{i:04}:amd64" for i in range(1000)),
        versions=tuple(f"package-with-a-long-name-{i:04}=1.0" for i in range(1000)),
        paths=("usr/b", "usr/a"),
        bytes=5,
    )
    bucket = Group("bucket/etc", "bucket", (), ("3 paths 10 bytes",), ("etc/x",), 10)
    result = plan([many, bucket], {"src/big": 0.5, "bucket/etc": 0.9}, 4, min_gain=0)
    specs = {s.name: s for s in to_layer_specs(result)}
    big = specs["src/big"]
    assert big.paths == ("usr/a", "usr/b")
    ann = dict(big.annotations)
    pkgs = ann["org.pkgchunk.packages"]
    assert pkgs.startswith("package-with-a-long-name-0000,package-with-a-long-name-0001,")
    assert pkgs.endswith(" more)") and len(pkgs) <= 2048
    shown = pkgs.split(",")[:-1]
    assert int(pkgs.rsplit("+", 1)[1].split()[0]) == 1000 - len(shown)
    assert ann["org.pkgchunk.groups"] == "src/big"
    assert ann["org.pkgchunk.change-probability"] == "0.5000"
    assert big.comment.startswith("pkgchunk src/big: 1000 packages, 5 bytes: package-with")
    assert len(big.comment) < 600
    etc = dict(specs["bucket/etc"].annotations)
    assert "org.pkgchunk.packages" not in etc and etc["org.pkgchunk.groups"] == "bucket/etc"


# --------------------------------------------------------------------------- a real update


def sized_debian_tree(admin: Path) -> FileTree:
    """The fixture's tree, each package's files sized from its Installed-Size."""
    tree, owners = debian_tree(admin)
    expected = json.loads((admin / "expected.json").read_text())
    kib = {p["package"]: p["installed_size_kib"] or 0 for p in expected["packages"]}
    files: dict[str, list[str]] = {}
    for path, who in owners.items():
        files.setdefault(who[0].split(":")[0], []).append(path)
    own = collect(tree)
    for key, paths in own.owners.items():
        e = tree.entries[key]
        if e.kind != "reg" or key.startswith("var/lib/dpkg/"):
            continue
        name = own.packages[paths[0]].name
        n = max(1, len(files.get(name, ())))
        tree.entries[key] = Entry(key, "reg", 0o644, size=kib.get(name, 0) * 1024 // n)
    return tree


def test_a_real_security_update_keeps_layers_and_pulls_only_changed_groups() -> None:
    root = shared_fixtures() / "dpkg"
    old_tree = sized_debian_tree(root / "debian-12-bookworm-minbase-no-security")
    new_tree = sized_debian_tree(root / "debian-12-bookworm-minbase")
    rules = load_rules("debian")
    old_own, new_own = collect(old_tree), collect(new_tree)
    old_groups = build_groups(old_tree, old_own, rules)
    first = plan(old_groups, probabilities(old_groups, old_own.packages), 16)
    check_plan(first, old_groups, 16)
    label = encode(first, old_groups, None)
    previous = decode(label)

    new_groups = build_groups(new_tree, new_own, rules)
    probs = probabilities(new_groups, new_own.packages, previous)
    second = plan(new_groups, probs, 16, previous)
    check_plan(second, new_groups, 16)
    assert layout(second) == layout(first)  # same package set: nothing moves

    old_v = {g.key: g.versions for g in old_groups}
    changed = {g.key for g in new_groups if g.versions != old_v.get(g.key)}
    diff = json.loads((root / "apt-versions.json").read_text())["installed_version_diff"]
    names = {name.split(":")[0] for name in diff}
    assert {"rule/perl", "src/apt", "src/pam", "src/tzdata", "src/xz-utils"} <= changed
    pkg_changed = {v.rpartition("=")[0] for g in new_groups if g.key in changed for v in g.versions}
    assert len(names) == 13 and names <= pkg_changed  # every upgraded package is seen
    record = decode(encode(second, new_groups, previous)).history
    for key in changed - {"pkgdb"}:
        assert (record[key].seen, record[key].changed) == (2, 1), key
    unchanged_pkg = next(g.key for g in new_groups if g.key not in changed)
    assert (record[unchanged_pkg].seen, record[unchanged_pkg].changed) == (2, 0)

    # Bytes a client pulls: every layer holding a changed group.
    pulled = sum(layer.bytes for layer in second.layers if changed & set(layer.groups))
    total = sum(layer.bytes for layer in second.layers)
    floor = sum(g.bytes for g in new_groups if g.key in changed)
    assert floor <= pulled < total
    assert pulled <= 3 * floor, (pulled, floor, total)
    # apko-style baseline with the same budget: the 15 largest groups alone, one overflow
    ranked = sorted(new_groups, key=lambda g: (-g.bytes, g.key))
    baseline = [[g] for g in ranked[:15]] + [ranked[15:]]
    base_pulled = sum(
        sum(g.bytes for g in layer) for layer in baseline if changed & {g.key for g in layer}
    )
    assert pulled <= base_pulled


# --------------------------------------------------------------------------- frequency

DAY = 86_400
T0 = 1_700_000_000


def fgroup(key: str, kind: str = "package", pkgs: tuple[str, ...] = (), **kw: object) -> Group:
    return Group(key, kind, pkgs, ("v=1",), (f"{key}/f",), 100, **kw)  # type: ignore[arg-type]


def test_changelog_rate_counts_distinct_days_relative_to_the_image() -> None:
    from pkgchunk.pkgdb.model import Package
    from pkgchunk.plan.frequency import WINDOW_YEARS, changelog_probability

    def pk(name: str, times: list[int]) -> Package:
        return Package(name, "1", "x86_64", "src", changelog_times=tuple(times), db="rpm-sqlite")

    busy = [pk("kernel", [T0 - i * 7 * DAY for i in range(100)])]  # weekly for two years
    calm = [pk("bzip2", [T0 - 400 * DAY, T0 - 3000 * DAY])]  # once in the window
    # the same day twice, from two subpackages, counts once
    twins = [pk("a", [T0 - DAY]), pk("b", [T0 - DAY + 60])]
    p_busy = changelog_probability(busy, T0)
    p_calm = changelog_probability(calm, T0)
    p_twins = changelog_probability(twins, T0)
    assert p_busy is not None and p_calm is not None and p_twins is not None
    assert p_busy > 0.5 > 0.05 > p_calm
    assert p_twins == pytest.approx(p_calm)
    rate = 100.5 / WINDOW_YEARS  # entries per year, with the +0.5 pseudo-count
    assert p_busy == pytest.approx(1 - math.exp(-rate * 7 / 365.25))
    # only the image's own clock matters: shifting every time changes nothing
    shifted = [pk("kernel", [t + 10**8 for t in busy[0].changelog_times])]
    assert changelog_probability(shifted, T0 + 10**8) == p_busy
    assert changelog_probability([pk("x", [])], T0) is None


def test_probabilities_combine_rules_kinds_and_history() -> None:
    from pkgchunk.pkgdb.model import Package
    from pkgchunk.plan.frequency import FIXED, UNKNOWN

    kernel = Package(
        "kernel-core", "6.8", "x86_64", "kernel", db="rpm-sqlite",
        changelog_times=tuple(T0 - i * 5 * DAY for i in range(100)),
    )  # fmt: skip
    bzip = Package(
        "bzip2", "1.0", "x86_64", "bzip2", db="rpm-sqlite", changelog_times=(T0 - 900 * DAY,)
    )
    nolog = Package("mystery", "1", "x86_64", "mystery", db="rpm-sqlite")
    packages = {p.key: p for p in (kernel, bzip, nolog)}
    groups = [
        fgroup("src/kernel", pkgs=(kernel.key,)),
        fgroup("src/bzip2", pkgs=(bzip.key,)),
        fgroup("rule/firmware", pkgs=(bzip.key,), frequency="low"),
        fgroup("src/mystery", pkgs=(nolog.key,)),
        fgroup("pkgdb", "pkgdb"),
        fgroup("bucket/etc", "bucket"),
        fgroup("big/opt/x", "bigfile"),
    ]
    p = probabilities(groups, packages)
    assert p["src/kernel"] > 0.5 > 0.05 > p["src/bzip2"]
    assert p["rule/firmware"] == FIXED["low"]
    assert p["src/mystery"] == UNKNOWN
    assert p["pkgdb"] == 1.0
    assert p["bucket/etc"] == FIXED["high"] and p["big/opt/x"] == FIXED["medium"]

    # History: bzip2 changed in 30 of the last 30 builds (and again now); the kernel never.
    history = {
        "src/bzip2": GroupHistory(seen=31, changed=30, version="old"),
        "src/kernel": GroupHistory(seen=41, changed=0, version="v=1"),
        "pkgdb": GroupHistory(seen=41, changed=0, version="v=1"),
    }
    prev = PreviousPlan(layers=(), history=history)
    q = probabilities(groups, packages, prev)
    assert q["src/bzip2"] > 0.75 > p["src/bzip2"]
    assert q["src/kernel"] < 0.25 < p["src/kernel"]
    assert q["pkgdb"] == 1.0
    assert q["src/mystery"] == p["src/mystery"]  # no history: the prior
