"""The mtime clamp policy: stable across rebuilds, only moves backwards, hardlink-consistent."""

from __future__ import annotations

import calendar
from typing import cast

from pkgchunk.pkgdb.model import Ownership, Package
from pkgchunk.plan import mtimes
from pkgchunk.plan.record import MTIME_LABEL, BuildRecord, MtimeRecord
from pkgchunk.tree import DataRef, Entry, FileTree, Kind

#: 2023-01-01 UTC: directories of an image whose oldest payload is from 2023 clamp to it.
Y2023 = calendar.timegm((2023, 1, 1, 0, 0, 0))
DAY = 86_400


def d(n: int) -> int:
    """A time n days into 2023 (n < 365), or later."""
    return Y2023 + n * DAY


def _tree(**mt: int) -> FileTree:
    entries = {}
    for name, t in mt.items():
        path = name.replace("__", "/")
        kind: Kind = "dir" if path.endswith("_d") else "reg"
        entries[path] = Entry(path=path, kind=kind, mode=0o644, mtime=t, size=1,
                              data=DataRef("/dev/null") if kind == "reg" else None)
    return FileTree(entries=entries)


def _own(owners: dict[str, tuple[str, ...]]) -> Ownership:
    keys = {k for v in owners.values() for k in v}
    pkgs = {k: Package(name=k, version="1", arch="all", source=k) for k in keys}
    return Ownership(dbs=(), packages=pkgs, owners=owners)


def test_install_time_files_clamp_to_payload_time() -> None:
    # 'a' payload from the .deb (day 100); dpkg's own list file and a dir written later.
    tree = _tree(usr__bin__a=d(100), var__lib__dpkg__info__a_list=d(500),
                 usr__share__a_d=d(500))
    own = _own({"usr/bin/a": ("a",), "var/lib/dpkg/info/a_list": ("a",),
                "usr/share/a_d": ("a",)})
    out = mtimes.apply(tree, own)
    assert out.entries["usr/bin/a"].mtime == d(100)
    assert out.entries["var/lib/dpkg/info/a_list"].mtime == d(100)
    assert out.entries["usr/share/a_d"].mtime == Y2023  # directories: the oldest year's start
    # A rebuild at another wall-clock time gives the same result.
    tree2 = _tree(usr__bin__a=d(100), var__lib__dpkg__info__a_list=d(900),
                  usr__share__a_d=d(900))
    out2 = mtimes.apply(tree2, own)
    assert {p: e.mtime for p, e in out.entries.items()} == {
        p: e.mtime for p, e in out2.entries.items()
    }


def test_never_moves_forward_and_unowned_needs_epoch() -> None:
    tree = _tree(usr__bin__a=100, etc__gen=7000, usr__lib__b=50)
    own = _own({"usr/bin/a": ("a",), "usr/lib/b": ("a",)})
    out = mtimes.apply(tree, own)
    assert out.entries["usr/lib/b"].mtime == 50  # older than the stable time: untouched
    assert out.entries["etc/gen"].mtime == 7000  # unowned, no epoch: kept
    out = mtimes.apply(tree, own, source_date_epoch=1000)
    assert out.entries["etc/gen"].mtime == 1000
    assert out.entries["usr/bin/a"].mtime == 100
    assert mtimes.apply(tree, own, policy="keep") is tree


def test_hardlinked_paths_share_one_mtime() -> None:
    ref = DataRef("/dev/null")
    x = Entry(path="usr/bin/x", kind="reg", mode=0o755, mtime=900, size=1, data=ref, link=1)
    y = Entry(path="var/lib/dpkg/y", kind="reg", mode=0o755, mtime=900, size=1, data=ref, link=1)
    w = Entry(path="usr/bin/w", kind="reg", mode=0o755, mtime=200, size=1, data=ref)
    tree = FileTree(entries={e.path: e for e in (x, y, w)})
    # x's owner p is stable at 900; y's owner q at 200 (its payload w): one inode, one mtime.
    own = _own({"usr/bin/x": ("p",), "var/lib/dpkg/y": ("q",), "usr/bin/w": ("q",)})
    out = mtimes.apply(tree, own)
    assert out.entries["usr/bin/x"].mtime == out.entries["var/lib/dpkg/y"].mtime == 200


def test_shared_directory_does_not_move_when_a_package_below_it_does() -> None:
    # usr/share_d is owned by a (payload at day 100) and b (day 300): an update of b, or
    # of a (the oldest), must not move the directory's mtime, since every layer below it
    # carries its entry.
    tree = _tree(usr__share_d=d(900), usr__share__a=d(100), usr__share__b=d(300))
    own = _own({"usr/share_d": ("a", "b"), "usr/share/a": ("a",), "usr/share/b": ("b",)})
    out = mtimes.apply(tree, own)
    assert out.entries["usr/share_d"].mtime == Y2023
    bumped = _tree(usr__share_d=d(950), usr__share__a=d(100), usr__share__b=d(800))
    assert mtimes.apply(bumped, own).entries["usr/share_d"].mtime == Y2023
    oldest_bumped = _tree(usr__share_d=d(950), usr__share__a=d(200), usr__share__b=d(300))
    assert mtimes.apply(oldest_bumped, own).entries["usr/share_d"].mtime == Y2023
    # once no package of 2023 is left, the directories move to the next oldest year
    gone = _tree(usr__share_d=d(950), usr__share__a=d(400), usr__share__b=d(800))
    assert mtimes.apply(gone, own).entries["usr/share_d"].mtime == calendar.timegm(
        (2024, 1, 1, 0, 0, 0)
    )


def test_directory_epoch_is_bounded_and_never_later_than_a_payload() -> None:
    assert mtimes.oldest_year_start({}) is None
    assert mtimes.oldest_year_start({"a": d(100), "b": d(20)}) == Y2023
    assert mtimes.oldest_year_start({"a": Y2023}) == Y2023
    # hostile times (far future, before 1970) still give a limit no later than the oldest
    for t in (-5, 10**15, -(10**15)):
        limit = mtimes.oldest_year_start({"a": t})
        assert limit is not None and limit <= t


def _entries(spec: dict[str, tuple[str, int]] | None = None, **kw: tuple[str, int]) -> FileTree:
    """path (in ``spec``, or a keyword with '__' for '/') -> (kind, mtime)."""
    out = {}
    named = {k.replace("__", "/"): v for k, v in kw.items()}
    for path, (kind, t) in {**named, **(spec or {})}.items():
        out[path] = Entry(path=path, kind=cast(Kind, kind), mode=0o755, mtime=t,
                          size=1 if kind == "reg" else 0,
                          data=DataRef("/dev/null") if kind == "reg" else None)
    return FileTree(entries=out)


def test_unowned_directory_takes_oldest_time_below_it() -> None:
    # var/lib/dpkg/info is no package's, yet every package's layer carries its entry.
    info = "var/lib/dpkg/info"
    own = _own({f"{info}/a": ("a",), f"{info}/b": ("b",), "usr/a": ("a",), "usr/b": ("b",)})

    def tree(now: int, b_time: int) -> FileTree:
        return _entries(var=("dir", now), var__lib=("dir", now), var__lib__dpkg=("dir", now),
                        var__lib__dpkg__info=("dir", now), var__lib__dpkg__info__a=("reg", now),
                        var__lib__dpkg__info__b=("reg", now), var__cache=("dir", now),
                        var__log=("dir", 5), var__log__x=("reg", now),
                        usr=("dir", now), usr__a=("reg", d(100)), usr__b=("reg", b_time))

    out = mtimes.apply(tree(d(900), d(300)), own)
    assert out.entries[info].mtime == out.entries["var"].mtime == Y2023
    assert out.entries[f"{info}/b"].mtime == d(300)  # dpkg's own file: its package's time
    assert out.entries["var/cache"].mtime == Y2023  # every directory, even with nothing owned
    assert out.entries["var/log"].mtime == 5  # older already: never moved forward
    assert out.entries["var/log/x"].mtime == d(900)  # unowned file, no epoch: kept
    bumped = mtimes.apply(tree(d(990), d(800)), own)
    assert bumped.entries[info].mtime == Y2023
    assert bumped.entries["usr/b"].mtime == d(800)


def test_derived_files_clamp_like_their_origin() -> None:
    # py3compile writes __pycache__/mod.cpython-311.pyc at build time; it follows mod.py.
    own = _own({"usr/lib/p/mod.py": ("p",), "usr/lib/p": ("p",)})
    pyc = "usr/lib/p/__pycache__/mod.cpython-311.pyc"

    def tree(now: int) -> FileTree:
        spec = {"usr": ("dir", now), "usr/lib": ("dir", now), "usr/lib/p": ("dir", d(50)),
                "usr/lib/p/mod.py": ("reg", d(100)), "usr/lib/p/__pycache__": ("dir", now),
                pyc: ("reg", now)}
        return _entries(spec)

    a, b = mtimes.apply(tree(d(900)), own), mtimes.apply(tree(d(990)), own)
    assert a.entries[pyc].mtime == b.entries[pyc].mtime == d(100)
    assert a.entries["usr/lib/p/__pycache__"].mtime == Y2023


def _symlink(path: str, target: str, t: int) -> Entry:
    return Entry(path=path, kind="sym", mode=0o777, mtime=t, target=target)


def test_merged_usr_alias_is_not_payload() -> None:
    # Packages list /bin (and /lib64) as their directory; on a merged-/usr image it is a
    # symlink the build made at wall-clock time. It must not become their stable time, or
    # every directory of theirs would carry the build time and change on every rebuild.
    own = _own({"bin": ("a", "b"), "lib64": ("a",), "usr/bin/x": ("a",), "usr/bin/y": ("b",),
                "usr/share/doc/a": ("a",)})

    def tree(now: int, b_time: int) -> FileTree:
        base = _entries({"usr": ("dir", now), "usr/bin": ("dir", now),
                         "usr/lib64": ("dir", now), "usr/bin/x": ("reg", d(100)),
                         "usr/bin/y": ("reg", b_time), "usr/share": ("dir", now),
                         "usr/share/doc": ("dir", now), "usr/share/doc/a": ("dir", now)})
        base.entries["bin"] = _symlink("bin", "usr/bin", now)
        base.entries["lib64"] = _symlink("lib64", "usr/lib64", now)
        return base

    a, b = mtimes.apply(tree(d(900), d(300)), own), mtimes.apply(tree(d(990), d(800)), own)
    assert mtimes.stable_times(tree(d(900), d(300)), own) == {"a": d(100), "b": d(300)}
    assert a.entries["usr/share/doc/a"].mtime == b.entries["usr/share/doc/a"].mtime == Y2023
    # the alias itself, shared by a and b, is clamped like a directory
    assert a.entries["bin"].mtime == b.entries["bin"].mtime == Y2023
    assert a.entries["lib64"].mtime == Y2023


def test_symlink_to_a_file_still_counts() -> None:
    own = _own({"usr/bin/x": ("a",), "usr/bin/sh": ("a",)})
    t = _entries({"usr": ("dir", 50), "usr/bin": ("dir", 50), "usr/bin/x": ("reg", 100)})
    t.entries["usr/bin/sh"] = _symlink("usr/bin/sh", "x", 200)
    assert mtimes.stable_times(t, own) == {"a": 200}


def _dirs(value: str) -> int | None:
    return BuildRecord.from_labels({MTIME_LABEL: value}).carried_directory_epoch


def test_label_records_epoch_and_directory_limit() -> None:
    value = MtimeRecord("clamp", 1700000000, Y2023).label()
    assert value == f"clamp;epoch=1700000000;dirs={Y2023}"
    assert MtimeRecord.parse(value) == MtimeRecord("clamp", 1700000000, Y2023)
    assert _dirs(value) == Y2023
    assert MtimeRecord.parse("clamp") == MtimeRecord("clamp", None, None)
    assert _dirs("clamp;dirs=-86400") == -86400
    assert MtimeRecord("keep", None, Y2023).label() == "keep"  # keep moves no directory
    assert _dirs("keep;dirs=5") is None
    for bad in ("", "clamp;dirs=", "clamp;dirs=1e9", "clamp;dirs=" + "9" * 40, "other;dirs=5"):
        assert _dirs(bad) is None, bad
    assert MtimeRecord.parse("clamp;epoch=-5") == MtimeRecord("clamp", None, None)
    assert MtimeRecord.parse("nonsense") is None


def test_carried_directory_limit_wins_over_this_image() -> None:
    own = _own({"usr/bin/a": ("a",)})
    tree = _entries({"usr": ("dir", d(900)), "usr/bin": ("dir", d(900)),
                     "usr/bin/a": ("reg", d(400))})
    assert mtimes.directory_epoch(tree, own) == calendar.timegm((2024, 1, 1, 0, 0, 0))
    carried = mtimes.directory_epoch(tree, own, _dirs(MtimeRecord("clamp", None, Y2023).label()))
    assert carried == Y2023
    out = mtimes.apply(tree, own, directory_epoch=carried)
    assert out.entries["usr/bin"].mtime == Y2023
    assert out.entries["usr/bin/a"].mtime == d(400)
