"""--prune prefixes, hard links recomputed after pruning, and the org.pkgchunk.edits codec."""

from __future__ import annotations

import pytest

from pkgchunk import bootc
from pkgchunk.errors import InputError
from pkgchunk.prune import Prefix, owner_key, parse_prefix, prune, split_links
from pkgchunk.tree import Entry, FileTree, ancestors


def tree_of(files: dict[str, int]) -> FileTree:
    """Regular files with hard link ids (0: none); parents added."""
    t = FileTree(label="t")
    for path, link in files.items():
        for a in ancestors(path):
            t.entries.setdefault(a, Entry(a, "dir", 0o755))
        t.entries[path] = Entry(path, "reg", 0o644, size=1, link=link)
    return t


def test_prefix_forms() -> None:
    assert parse_prefix("/sysroot/ostree") == Prefix("sysroot/ostree")
    assert parse_prefix("/sysroot/") == Prefix("sysroot", keep_dir=True)
    assert str(parse_prefix("sysroot/")) == "/sysroot/"
    for bad in ("/", "", "../x", "a/../../b"):
        with pytest.raises(InputError):
            parse_prefix(bad)
    p = Prefix("sysroot", keep_dir=True)
    assert p.matches("sysroot/ostree") and not p.matches("sysroot")
    assert not Prefix("sysroot/ostree").matches("sysroot/ostreex")


def test_links_recomputed_after_pruning() -> None:
    t = tree_of({"usr/a": 1, "usr/b": 2, "usr/c": 2, "usr/d": 3, "usr/e": 3,
                 "sysroot/ostree/repo/objects/aa/1.file": 1,
                 "sysroot/ostree/repo/objects/bb/2.file": 2, "keep/x": 0})
    r = prune(t, [Prefix("sysroot/ostree")])
    assert "sysroot" in r.tree.entries and "sysroot/ostree" not in r.tree.entries
    assert dict((str(p), n) for p, n in r.counts) == {"/sysroot/ostree": 7}  # 5 dirs, 2 objects
    e = r.tree.entries
    assert e["usr/a"].link == 0  # its only other name was its object
    assert e["usr/b"].link and e["usr/b"].link == e["usr/c"].link
    assert e["usr/d"].link == e["usr/e"].link != e["usr/b"].link
    assert r.loose == {e["usr/b"].link}  # reached into the pruned tree
    assert t.entries["usr/a"].link == 1  # the input is untouched
    split = split_links(r.tree, r.loose, owner_key({"usr/b": ("p1",), "usr/c": ("p2",)}))
    assert split.entries["usr/b"].link == split.entries["usr/c"].link == 0
    assert split.entries["usr/d"].link == split.entries["usr/e"].link != 0
    same = split_links(r.tree, r.loose, owner_key({"usr/b": ("p1",), "usr/c": ("p1",)}))
    assert same.entries["usr/b"].link == same.entries["usr/c"].link != 0


def test_edits_round_trip_and_hostile_values() -> None:
    edits = bootc.Edits((Prefix("sysroot/ostree"), Prefix("x", True)), ("ostree.commit",),
                        ("a",))
    assert bootc.decode_edits(bootc.encode_edits(edits)) == edits
    assert bootc.decode_edits(None) == bootc.Edits()
    for bad in ("nope", "[]", '{"v":2}', '{"v":1,"prune":["/"]}', '{"v":1,"prune":[1]}',
                '{"v":1,"x":1}', '{"v":true}', '{"v":1,"labels":{"removed":"a"}}'):
        with pytest.raises(InputError, match=r"org\.pkgchunk\.edits"):
            bootc.decode_edits(bad)


def test_decide_label_edits_order() -> None:
    t = tree_of({"usr/x": 0})
    labels = {"containers.bootc": "1", "ostree.commit": "c", "ostree.final-diffid": "d"}
    pol = bootc.decide(labels, t, label_edits=["ostree.commit=mine", "k=v", "k-"])
    assert pol.edits.prune == (bootc.FARM,)
    assert pol.edits.labels_removed == ("k", "ostree.final-diffid")
    assert dict(pol.label_values) == {"ostree.commit": "mine"}
    cfg = bootc.edit_config({"config": {"Labels": {**labels, "k": "old"}}}, pol)
    assert cfg["config"]["Labels"] == {"containers.bootc": "1", "ostree.commit": "mine"}
    kept = bootc.decide(labels, t, keep_sysroot=True)
    assert not kept.edits and kept.note and "keeping" in kept.note
    assert bootc.decide({}, t).bootc is None
