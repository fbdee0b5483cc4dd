"""The carry decision (pure): which mtime an entry gets, which previous layers can matter,
and how the policy is recorded."""

from __future__ import annotations

import dataclasses

from pkgchunk.image import LayerSpec
from pkgchunk.plan import carry
from pkgchunk.plan.groups import Group
from pkgchunk.plan.planner import GroupHistory, PreviousLayer, PreviousPlan
from pkgchunk.plan.record import MTIME_LABEL, BuildRecord, MtimeRecord
from pkgchunk.tree import Entry, FileTree

D = "sha256:" + "ab" * 32


def _reg(path: str, mtime: int, size: int = 10, link: int = 0, mode: int = 0o644) -> Entry:
    return Entry(path, "reg", mode, mtime=mtime, size=size, link=link)


def _prev(entry: Entry, mtime: int, digest: str = "h") -> carry.PrevEntry:
    return carry.PrevEntry(carry.identity(entry, digest), mtime)


def test_identical_entry_takes_the_older_previous_mtime_and_never_a_later_one() -> None:
    a, b, c = _reg("a", 200), _reg("b", 200), _reg("c", 200)
    tree = FileTree({"a": a, "b": b, "c": c})
    previous = {"a": _prev(a, 100), "b": _prev(b, 300), "c": _prev(c, 100, "other")}
    assert sorted(carry.candidates(tree, previous)) == ["a", "c"]  # b's is later: never
    got = carry.carry(tree, previous, {"a": "h", "c": "h-new"})
    assert got.paths == {"a"}
    assert [got.tree.entries[p].mtime for p in "abc"] == [100, 200, 200]
    assert tree.entries["a"].mtime == 200  # the input tree is not changed


def test_any_other_attribute_differing_means_no_carry() -> None:
    base = _reg("f", 200)
    for changed in (dataclasses.replace(base, mode=0o755), dataclasses.replace(base, uid=1),
                    dataclasses.replace(base, size=11),
                    dataclasses.replace(base, xattrs=(("user.x", b"1"),))):
        tree = FileTree({"f": changed})
        assert carry.candidates(tree, {"f": _prev(base, 100)}) == []
        assert not carry.carry(tree, {"f": _prev(base, 100)}, {"f": "h"}).paths
    link = Entry("l", "sym", 0o777, mtime=200, target="x")
    moved = dataclasses.replace(link, target="y")
    assert not carry.carry(FileTree({"l": moved}), {"l": _prev(link, 100, "")}, {}).paths
    assert carry.carry(FileTree({"l": link}), {"l": _prev(link, 100, "")}, {}).paths == {"l"}


def test_a_hardlink_set_carries_only_as_a_whole() -> None:
    a, b = _reg("a", 200, link=1), _reg("b", 200, link=1)
    tree = FileTree({"a": a, "b": b})
    both = carry.carry(tree, {"a": _prev(a, 100), "b": _prev(b, 100)}, {"a": "h", "b": "h"})
    assert both.paths == {"a", "b"}
    # b is new (or held something else): a alone may not move, one inode has one mtime
    one = carry.carry(tree, {"a": _prev(a, 100)}, {"a": "h", "b": "h"})
    assert not one.paths and one.tree.entries["a"].mtime == 200


def test_allowed_excuses_only_what_the_previous_build_holds() -> None:
    e = _reg("f", 200)
    ident = carry.identity(e, "h")
    assert carry.allowed(200, 200, ident, None)
    assert carry.allowed(100, 200, ident, carry.PrevEntry(ident, 100))
    assert not carry.allowed(99, 200, ident, carry.PrevEntry(ident, 100))
    assert not carry.allowed(100, 200, carry.identity(e, "x"), carry.PrevEntry(ident, 100))
    assert not carry.allowed(300, 200, ident, carry.PrevEntry(ident, 300))  # never forward
    assert not carry.allowed(100, 200, ident, None)


def _group(key: str, version: str, kind: str = "package") -> Group:
    return Group(key, kind, (), (version,), (), 0)  # type: ignore[arg-type]


def test_only_layers_that_can_hold_an_older_entry_are_read() -> None:
    prev = PreviousPlan(
        layers=(PreviousLayer("l0", ("src/a",)), PreviousLayer("l1", ("src/b", "src/c")),
                PreviousLayer("l2", ("src/d",)), PreviousLayer("l3", ("bucket/etc",)),
                PreviousLayer("l4", ("src/e",)), PreviousLayer("l5", ("src/gone",))),
        history={k: GroupHistory(1, 0, "1") for k in
                 ("src/a", "src/b", "src/c", "src/d", "bucket/etc", "src/e", "src/gone")},
    )
    now = [_group("src/a", "1"), _group("src/b", "1"), _group("src/c", "2"),
           _group("src/d", "1"), _group("bucket/etc", "1", "bucket"), _group("src/e", "1")]
    # l1: c was upgraded; l3: unowned files; l4: carried last time; l5: a group is gone
    assert carry.layers_to_read(prev, now, carried=(4,)) == (1, 3, 4, 5)


def test_carried_layers_count_parent_directories() -> None:
    specs = [LayerSpec("x", ("usr/lib/x/f",)), LayerSpec("y", ("etc/y",))]
    assert carry.carried_layers(specs, {"usr/lib"}) == (0,)
    assert carry.carried_layers(specs, {"etc/y", "usr/lib/x/f"}) == (0, 1)
    assert carry.carried_layers(specs, set()) == ()


def test_the_record_round_trips_and_old_and_hostile_labels_parse() -> None:
    rec = MtimeRecord("clamp", None, 1_600_000_000, D, (0, 3, 7))
    assert rec.label() == f"clamp;dirs=1600000000;carry={D};carried=0.3.7"
    assert MtimeRecord.parse(rec.label()) == rec
    assert BuildRecord.from_labels({MTIME_LABEL: rec.label()}).mtime == rec
    # an older build's label: no carry
    assert MtimeRecord.parse("clamp;dirs=5") == MtimeRecord("clamp", None, 5)
    # hostile: a carry that is not a digest drops the carry and its layers; bad indices drop
    assert MtimeRecord.parse("clamp;carry=sha256:zz;carried=1") == MtimeRecord("clamp")
    assert MtimeRecord.parse(f"clamp;carry={D};carried=1.x.-2.99999999.1") == \
        MtimeRecord("clamp", None, None, D, (1,))
    # keep never carries
    assert MtimeRecord.parse(f"keep;carry={D}") == MtimeRecord("keep")
    assert MtimeRecord("keep", None, None, D, (1,)).label() == "keep"
