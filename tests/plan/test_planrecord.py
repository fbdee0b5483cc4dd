"""The org.pkgchunk.plan label: round trip, history counting, size, hostile input."""

from __future__ import annotations

import json

import pytest

from pkgchunk.errors import InputError
from pkgchunk.pkgdb.model import Ownership
from pkgchunk.plan.compose import compose
from pkgchunk.plan.groups import Group
from pkgchunk.plan.planner import GroupHistory, Plan, PreviousLayer, PreviousPlan, plan
from pkgchunk.plan.record import (
    HISTORY_CAP,
    LABEL,
    MTIME_LABEL,
    BuildRecord,
    MtimeRecord,
    decode,
    encode,
    record_labels,
)
from pkgchunk.plan.rules import parse_rules
from tests.plan.test_groups import make_tree, ownership, pkg


def grp(key: str, version: str, nbytes: int = 1000) -> Group:
    return Group(key, "package", (f"{key}:amd64",), (version,), (f"{key}/f",), nbytes)


def test_round_trip_keeps_layout_and_counts_history() -> None:
    groups = [grp("src/a", "a=1"), grp("src/b", "b=1", 10**8), grp("bucket/etc", "3 paths")]
    first = plan(groups, {g.key: 0.5 for g in groups}, 4, min_gain=0)
    label = encode(first, groups, None)
    assert json.loads(label)["v"] == 1 and " " not in label.replace("3 paths", "")
    prev = decode(label)
    assert [(la.name, la.groups) for la in prev.layers] == [
        (la.name, la.groups) for la in first.layers
    ]
    assert prev.builds == 1
    assert prev.history["src/a"] == GroupHistory(seen=1, changed=0, version="a=1")

    # next build: a changed, b did not, c is new, etc vanished
    now = [grp("src/a", "a=2"), grp("src/b", "b=1", 10**8), grp("src/c", "c=1")]
    second = plan(now, {g.key: 0.5 for g in now}, 4, prev)
    again = decode(encode(second, now, prev))
    assert again.builds == 2
    assert again.history["src/a"] == GroupHistory(2, 1, "a=2")
    assert again.history["src/b"] == GroupHistory(2, 0, "b=1")
    assert again.history["src/c"] == GroupHistory(1, 0, "c=1")
    assert "bucket/etc" not in again.history


def test_history_is_capped_and_scaled() -> None:
    prev = PreviousPlan(
        layers=(PreviousLayer("L", ("src/a",)),),
        history={"src/a": GroupHistory(HISTORY_CAP, 20, "a=1")},
        builds=99,
    )
    groups = [grp("src/a", "a=2")]
    h = decode(encode(plan(groups, {"src/a": 0.5}, 2, prev), groups, prev)).history["src/a"]
    # 51 builds with 21 changes, scaled to 50 builds: round(21 * 50 / 51) = 21
    assert (h.seen, h.changed) == (HISTORY_CAP, round(21 * HISTORY_CAP / (HISTORY_CAP + 1)))


def test_label_stays_compact_for_hundreds_of_groups() -> None:
    groups = [
        grp(
            f"src/lib{name}-{i}",
            " ".join(f"lib{name}{j}-{i}=1.2.{i}-{j}+deb12u1" for j in range(1 + i % 6)),
        )
        for i, name in enumerate(["foo", "barbaz", "qux", "python3-x"] * 125)
    ]
    result = plan(groups, {g.key: (i % 10) / 10 for i, g in enumerate(groups)}, 64)
    label = encode(result, groups, None)
    assert len(label.encode()) < 32 * 1024, len(label)
    assert len(decode(label).history) == 500


BAD = [
    ("", "not JSON"),
    ("[1]", "not a JSON object"),
    ('{"v":2,"n":1,"layers":[]}', "unsupported format version 2"),
    ('{"v":true,"n":1,"layers":[]}', "unsupported format version True"),
    ('{"v":1,"n":0,"layers":[]}', "n must be an integer >= 1"),
    ('{"v":1,"n":1,"layers":{}}', "layers must be a list"),
    ('{"v":1,"n":1,"layers":[],"x":1}', "unknown fields x"),
    ('{"v":1,"n":1,"layers":[["a"]]}', "layers[0] must be [name, [groups...]]"),
    ('{"v":1,"n":1,"layers":[["",[]]]}', "layers[0] name must be a non-empty string"),
    ('{"v":1,"n":1,"layers":[["a",[]],["a",[]]]}', "layer name 'a' appears twice"),
    ('{"v":1,"n":1,"layers":[["a",[["k",1,0]]]]}', "must be [key, seen, changed, version]"),
    ('{"v":1,"n":1,"layers":[["a",[["k",0,0,""]]]]}', "seen must be an integer >= 1"),
    ('{"v":1,"n":1,"layers":[["a",[["k",2,2,""]]]]}', "changed 2 must be below seen 2"),
    ('{"v":1,"n":1,"layers":[["a",[["k",1,-1,""]]]]}', "changed must be an integer >= 0"),
    ('{"v":1,"n":1,"layers":[["a",[["k",1.5,0,""]]]]}', "seen must be an integer"),
    ('{"v":1,"n":1,"layers":[["a",[["k",1,0,7]]]]}', "version must be a string"),
    ('{"v":1,"n":1,"layers":[["a",[["k",1,0,""]]],["b",[["k",1,0,""]]]]}', "in two layers"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ('{"v":1,"n":1,"layers":[["a",[["' + "k" * 9000 + '",1,0,""]]]]}', "key must be"),
]


@pytest.mark.parametrize(("label", "words"), BAD, ids=[w for _, w in BAD])
def test_malformed_labels_are_refused_with_one_line(label: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        decode(label)
    msg = str(info.value)
    assert msg.startswith(f"{LABEL} label: ") and words in msg and "\n" not in msg
    record = BuildRecord.from_labels({LABEL: label, "other": "x"})
    assert record.plan is None
    assert record.warnings == (f"{msg}; planning from scratch",)


def test_missing_label_is_no_previous_plan() -> None:
    assert BuildRecord.from_labels(None) == BuildRecord()
    assert BuildRecord.from_labels({"org.opencontainers.image.title": "x"}) == BuildRecord()


def test_record_round_trip_through_labels() -> None:
    mtime = MtimeRecord("clamp", 1700000000, 1672531200)
    label = '{"layers":[["src/a",[["src/a",3,1,"1.0"]]]],"n":3,"v":1}'
    record = BuildRecord.from_labels(record_labels(label, mtime))
    assert record.mtime == mtime and record.carried_directory_epoch == 1672531200
    assert record.plan is not None and record.plan.builds == 3
    assert BuildRecord.from_labels({MTIME_LABEL: "keep;dirs=5"}).carried_directory_epoch is None


def _rec(label: str) -> BuildRecord:
    return BuildRecord.from_labels({LABEL: label})


def test_compose_is_the_whole_recipe() -> None:
    tree = make_tree(
        {
            "usr/bin/bash": 1 << 20,
            "usr/bin/dash": 1 << 18,
            "etc/hostname": 10,
            "var/lib/dpkg/status": 5000,
        }
    )
    own = ownership(
        {pkg("bash"): ["usr/bin/bash"], pkg("dash"): ["usr/bin/dash"]},
        pkgdb=["var/lib/dpkg/status"],
    )
    rules = parse_rules("version: 1\nmax_layers: 3\nbuckets: [{name: etc, paths: [etc/*]}]\n", "r")
    out = compose(tree, own, rules).outcome
    assert out.warnings == ()
    assert len(out.plan.layers) <= 3
    assert [s.paths for s in out.layer_specs] == [la.paths for la in out.plan.layers]
    assert sorted(p for s in out.layer_specs for p in s.paths) == sorted(tree.entries)
    assert out.probabilities["pkgdb"] == 1.0
    prev = decode(out.label)

    again = compose(tree, own, rules, _rec(out.label), max_layers=1).outcome
    assert {la.name for la in again.plan.layers} <= {la.name for la in prev.layers}
    assert len(again.plan.layers) == 1 < len(prev.layers)
    assert decode(again.label).builds == 2

    broken = compose(tree, own, rules, _rec("{")).outcome
    assert broken.warnings and broken.warnings[0].startswith(f"{LABEL} label: not JSON")
    assert decode(broken.label).builds == 1
    fresh = compose(tree, own, rules, _rec(out.label), fresh=True).outcome
    # history kept, layout recomputed: the same layout again, so no build is recorded
    assert decode(fresh.label).builds == 1 and fresh.label == out.label
    assert isinstance(fresh.plan, Plan)


def test_a_build_that_changed_nothing_records_nothing() -> None:
    """Same layers, same groups, same versions: the label is the previous one, byte for byte
    (a counter would move the config digest of a no-op rebuild); any change records a build."""
    from pkgchunk.plan.groups import Group
    from pkgchunk.plan.planner import Plan, PlannedLayer

    def plan_of(*layers: tuple[str, tuple[str, ...]]) -> Plan:
        return Plan(
            layers=tuple(
                PlannedLayer(
                    name=n, groups=g, packages=(), paths=(), bytes=0, change_probability=0.0
                )
                for n, g in layers
            )
        )

    def groups(**versions: str) -> list[Group]:
        return [
            Group(key=k, kind="package", packages=(), versions=(v,), paths=(), bytes=0)
            for k, v in versions.items()
        ]

    plan = plan_of(("a", ("src/a",)), ("b", ("src/b",)))
    first = encode(plan, groups(**{"src/a": "1", "src/b": "1"}), None)
    again = encode(plan, groups(**{"src/a": "1", "src/b": "1"}), decode(first))
    assert again == first
    assert encode(plan, groups(**{"src/a": "1", "src/b": "1"}), decode(again)) == first
    updated = decode(encode(plan, groups(**{"src/a": "2", "src/b": "1"}), decode(first)))
    assert updated.builds == 2 and updated.history["src/a"].changed == 1
    assert updated.history["src/b"].seen == 2
    moved = decode(
        encode(
            plan_of(("a", ("src/a", "src/b"))),
            groups(**{"src/a": "1", "src/b": "1"}),
            decode(first),
        )
    )
    assert moved.builds == 2


def test_base_label_records_the_kept_layers_and_old_labels_still_decode() -> None:
    from pkgchunk.plan.record import BASE_LABEL, BuildRecord, base_labels

    plan = '{"layers":[["src/a",[["src/a",1,0,"a=1"]]]],"n":1,"v":1}'
    old = BuildRecord.from_labels({"org.pkgchunk.plan": plan, "org.pkgchunk.mtime": "clamp"})
    assert old.base_layers == 0 and old.plan is not None and not old.warnings
    new = BuildRecord.from_labels({"org.pkgchunk.plan": plan, **base_labels(3)})
    assert new.base_layers == 3 and new.plan == old.plan
    assert base_labels(0) == {}
    for bad in ("3", "layers=", "layers=-1", "layers=\u00b2", "layers=9999999", "x=1"):
        got = BuildRecord.from_labels({BASE_LABEL: bad})
        assert got.base_layers == 0 and len(got.warnings) == 1, bad


def test_fresh_plans_as_a_build_without_a_previous_one_and_still_records_history() -> None:
    files = {f"usr/lib/lib{i}.so": (i + 1) * 300_000 for i in range(30)}
    files["var/lib/dpkg/status"] = 5000
    tree = make_tree(files)

    def own(version: str) -> Ownership:
        return ownership(
            {
                pkg(f"lib{i}", version=version if i % 3 == 0 else "1.0"): [f"usr/lib/lib{i}.so"]
                for i in range(30)
            },
            pkgdb=["var/lib/dpkg/status"],
        )

    rules = parse_rules("version: 1\nmax_layers: 8\n", "r")
    first = compose(tree, own("1.0"), rules).outcome
    later = own("2.0")
    # the history says every third package changed: planning with it moves probabilities
    with_history = compose(tree, later, rules, _rec(first.label)).outcome
    fresh = compose(tree, later, rules, _rec(first.label), fresh=True).outcome
    stateless = compose(tree, later, rules).outcome
    assert fresh.probabilities == stateless.probabilities != with_history.probabilities
    assert fresh.plan == stateless.plan
    history = decode(fresh.label)
    assert history.builds == 2
    assert history.history["src/lib0"].changed == 1  # recorded for the builds that follow
