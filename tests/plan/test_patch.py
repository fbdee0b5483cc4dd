"""Patch layers (``plan/patch.py``): what a layer above the previous build's must hold, and
when a build is a patch at all."""

from __future__ import annotations

import dataclasses

import pytest

from pkgchunk.plan import patch
from pkgchunk.plan.record import PATCH_LABEL, BuildRecord, PatchRecord
from pkgchunk.tree import DataRef, Entry, FileTree


def _reg(path: str, src: str = "old.tar", offset: int = 0, link: int = 0,
         size: int = 3, mtime: int = 100) -> Entry:
    return Entry(path, "reg", 0o644, size=size, mtime=mtime, data=DataRef(src, offset),
                 link=link)


def _dir(path: str, mtime: int = 100) -> Entry:
    return Entry(path, "dir", 0o755, mtime=mtime)


def _tree(*entries: Entry) -> FileTree:
    return FileTree({e.path: e for e in entries})


def test_files_equal_in_header_are_hashed_and_kept_when_their_content_is_equal() -> None:
    old = _tree(_dir("usr"), _reg("usr/a"), _reg("usr/b", offset=512), _reg("usr/c"))
    new = _tree(_dir("usr"), _reg("usr/a", "new.tar"), _reg("usr/b", "new.tar", 512),
                _reg("usr/c", "new.tar", mtime=200))
    # usr/c's header differs (its mtime): no need to hash it, it is written whatever it holds
    assert patch.to_hash(new, old) == ["usr/a", "usr/b"]
    got = patch.delta(new, old, same_content={"usr/a"})
    assert got.paths == ("usr", "usr/b", "usr/c") and got.whiteouts == ()


def test_an_unchanged_tree_needs_no_patch() -> None:
    old = _tree(_dir("etc"), _reg("etc/a"), Entry("etc/l", "sym", 0o777, target="a"))
    new = _tree(_dir("etc"), _reg("etc/a", "new.tar"), Entry("etc/l", "sym", 0o777, target="a"))
    got = patch.delta(new, old, same_content=patch.to_hash(new, old))
    assert got.paths == () and got.whiteouts == ()


def test_owner_names_and_pax_records_count_as_header() -> None:
    old = _tree(_dir("etc"), dataclasses.replace(_reg("etc/a"), uname="root"))
    new = _tree(_dir("etc"), _reg("etc/a", "new.tar"))
    assert patch.to_hash(new, old) == []
    assert patch.delta(new, old, ()).paths == ("etc", "etc/a")


def test_removed_paths_get_one_whiteout_per_removed_tree() -> None:
    old = _tree(_dir("usr"), _dir("usr/gone"), _reg("usr/gone/x"), _dir("usr/gone/sub"),
                _reg("usr/gone/sub/y", offset=512), _reg("usr/keep", offset=1024))
    new = _tree(_dir("usr"), _reg("usr/keep", "new.tar", 1024))
    got = patch.delta(new, old, same_content={"usr/keep"})
    assert got.whiteouts == ("usr/gone",) and got.paths == ()


def test_a_directory_replaced_by_a_file_is_removed_and_written() -> None:
    old = _tree(_dir("opt"), _dir("opt/d"), _reg("opt/d/x"))
    new = _tree(_dir("opt"), _reg("opt/d", "new.tar"))
    got = patch.delta(new, old, ())
    assert got.whiteouts == ("opt/d",) and got.paths == ("opt", "opt/d")


def test_a_hardlink_set_is_written_whole_when_it_changes() -> None:
    old = _tree(_dir("b"), _reg("b/x", link=1), _reg("b/y", link=1), _reg("b/z", offset=9))
    # z joins the set: every member is written, so the patch holds the inode whole
    new = _tree(_dir("b"), _reg("b/x", "new.tar", link=4), _reg("b/y", "new.tar", link=4),
                _reg("b/z", "new.tar", link=4))
    got = patch.delta(new, old, same_content={"b/x", "b/y", "b/z"})
    assert got.paths == ("b", "b/x", "b/y", "b/z")
    assert patch.written_bytes(new, got.paths) == 3  # one inode


def test_the_previous_build_decides_whether_to_patch() -> None:
    assert not patch.may_patch(0, PatchRecord(), 5, 5).patch
    assert patch.may_patch(2, PatchRecord(), 5, 5).patch
    assert patch.may_patch(2, PatchRecord(1, 10), 6, 5).patch
    full = patch.may_patch(2, PatchRecord(2, 10), 7, 5)
    assert not full.patch and "planning every layer again" in full.reason
    assert not patch.may_patch(2, PatchRecord(), 6, 5).patch  # manifest != record
    assert not patch.may_patch(2, PatchRecord(), 5, None).patch  # no plan label


def test_patches_stop_at_their_share_of_the_image() -> None:
    assert patch.worth_it(PatchRecord(1, 100), 300, 1000).patch
    too_big = patch.worth_it(PatchRecord(1, 100), 401, 1000)
    assert not too_big.patch and "50%" in too_big.reason


@pytest.mark.parametrize("value", [
    "layers=0;bytes=1", "layers=1", "bytes=1", "layers=-1;bytes=2", "layers=1;bytes=1;x=2",
    "layers=1;layers=2", "layers=1;bytes=" + "9" * 30, 7, "",
])
def test_a_bad_patch_label_is_a_warning(value: object) -> None:
    assert PatchRecord.parse(value) is None
    record = BuildRecord.from_labels({PATCH_LABEL: value})
    assert record.patch == PatchRecord() and any(PATCH_LABEL in w for w in record.warnings)


def test_the_patch_label_round_trips() -> None:
    record = PatchRecord(3, 123456)
    assert BuildRecord.from_labels(record.label()).patch == record
    assert PatchRecord().label() == {}
