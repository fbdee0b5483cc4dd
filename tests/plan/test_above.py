"""The delta of an image over its base (``--keep-base``): what is written above the kept
layers, and what is deleted from them."""

from __future__ import annotations

import dataclasses

from pkgchunk.plan.above import delta, expected_tree
from pkgchunk.tree import DataRef, Entry, FileTree


def _reg(path: str, src: str = "base.tar", offset: int = 0, link: int = 0) -> Entry:
    return Entry(path, "reg", 0o644, size=3, data=DataRef(src, offset), link=link)


def _dir(path: str, mtime: int = 0) -> Entry:
    return Entry(path, "dir", 0o755, mtime=mtime)


def _tree(*entries: Entry) -> FileTree:
    return FileTree({e.path: e for e in entries})


def test_untouched_base_paths_are_not_in_the_delta() -> None:
    """Except the directories above a changed path: those are always written (their mtime
    would otherwise decide by the second of the install whether they move a layer)."""
    base = _tree(_dir("etc"), _reg("etc/a"), _reg("etc/b", offset=512), _dir("usr"))
    full = _tree(*base.entries.values(), _reg("usr/new", "upper.tar"))
    got = delta(base, full)
    assert got.paths == ("usr", "usr/new") and got.whiteouts == ()


def test_changed_metadata_content_and_mtime_are_in_the_delta() -> None:
    base = _tree(_dir("etc"), _reg("etc/a"), _reg("etc/b", offset=512), _dir("var"))
    full = _tree(
        _dir("etc"),
        _reg("etc/a", "upper.tar"),  # rewritten by an upper layer (same bytes or not)
        dataclasses.replace(base.entries["etc/b"], mode=0o600),
        _dir("var", mtime=5),
    )
    assert delta(base, full).paths == ("etc", "etc/a", "etc/b", "var")


def test_only_the_topmost_deleted_path_gets_a_whiteout() -> None:
    base = _tree(_dir("usr"), _dir("usr/doc"), _reg("usr/doc/x"), _dir("usr/doc/sub"),
                 _reg("usr/doc/sub/y", offset=512), _reg("usr/keep", offset=1024))
    full = _tree(_dir("usr"), _reg("usr/keep", offset=1024))
    got = delta(base, full)
    assert got.whiteouts == ("usr/doc",) and got.paths == ()


def test_a_directory_replaced_by_a_file_is_deleted_and_written() -> None:
    base = _tree(_dir("opt"), _dir("opt/d"), _reg("opt/d/x"), Entry("opt/l", "sym", 0o777,
                                                                      target="a"))
    full = _tree(_dir("opt"), _reg("opt/d", "upper.tar"),
                 Entry("opt/l", "sym", 0o777, target="b"))
    got = delta(base, full)
    assert got.whiteouts == ("opt/d",)  # a symlink over a symlink needs no whiteout
    assert got.paths == ("opt", "opt/d", "opt/l")


def test_a_new_hardlink_to_a_base_file_takes_the_whole_group_up() -> None:
    base = _tree(_dir("bin"), _reg("bin/a"), _reg("bin/c", offset=512))
    full = _tree(_dir("bin"), _reg("bin/a", link=1), _reg("bin/b", link=1),
                 _reg("bin/c", offset=512))
    assert delta(base, full).paths == ("bin", "bin/a", "bin/b")
    # The same group numbered differently in each tree is no change.
    base2 = _tree(_reg("x", link=7), _reg("y", link=7))
    full2 = _tree(_reg("x", link=1), _reg("y", link=1))
    assert delta(base2, full2).paths == ()


def test_dropped_paths_stay_as_the_base_has_them() -> None:
    """A pruned prefix (a bootc base's ostree farm) is neither written nor deleted above a
    kept base: the output holds the base's own entries there."""
    base = _tree(_dir("sysroot"), _dir("sysroot/ostree"), _reg("sysroot/ostree/obj"),
                 _dir("etc"), _reg("etc/old", offset=512))
    full = _tree(_dir("sysroot"), _dir("sysroot/ostree"), _reg("sysroot/ostree/new", "up.tar"),
                 _dir("etc"), _reg("etc/new", "up.tar"))
    whole = delta(base, full)
    assert whole.whiteouts == ("etc/old", "sysroot/ostree/obj")
    assert expected_tree(full, base, whole).entries.keys() == full.entries.keys()
    kept = whole.without(lambda p: p.startswith("sysroot/ostree/"))
    assert kept.paths == ("etc", "etc/new", "sysroot", "sysroot/ostree")
    assert kept.whiteouts == ("etc/old",)
    got = expected_tree(full, base, kept)
    assert sorted(got.entries) == ["etc", "etc/new", "sysroot", "sysroot/ostree",
                                   "sysroot/ostree/obj"]
