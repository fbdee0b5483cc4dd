"""The mtime clamp policy: stable across rebuilds, only moves backwards, hardlink-consistent."""

from __future__ import annotations

from pkgchunk import mtimes
from pkgchunk.pkgdb.model import Ownership, Package
from pkgchunk.tree import DataRef, Entry, FileTree


def _tree(**mt: int) -> FileTree:
    entries = {}
    for name, t in mt.items():
        path = name.replace("__", "/")
        kind = "dir" if path.endswith("_d") else "reg"
        entries[path] = Entry(path=path, kind=kind, mode=0o644, mtime=t, size=1,
                              data=DataRef("/dev/null") if kind == "reg" else None)
    return FileTree(entries=entries)


def _own(owners: dict[str, tuple[str, ...]]) -> Ownership:
    keys = {k for v in owners.values() for k in v}
    pkgs = {k: Package(name=k, version="1", arch="all", source=k) for k in keys}
    return Ownership(dbs=(), packages=pkgs, owners=owners)


def test_install_time_files_clamp_to_payload_time() -> None:
    # 'a' payload from the .deb (mtime 100); dpkg's own list file and a dir written at 5000.
    tree = _tree(usr__bin__a=100, var__lib__dpkg__info__a_list=5000, usr__share__a_d=5000)
    own = _own({"usr/bin/a": ("a",), "var/lib/dpkg/info/a_list": ("a",),
                "usr/share/a_d": ("a",)})
    out = mtimes.apply(tree, own)
    assert out.entries["usr/bin/a"].mtime == 100
    assert out.entries["var/lib/dpkg/info/a_list"].mtime == 100
    assert out.entries["usr/share/a_d"].mtime == 100
    # A rebuild at another wall-clock time gives the same result.
    tree2 = _tree(usr__bin__a=100, var__lib__dpkg__info__a_list=9000, usr__share__a_d=9000)
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


def test_shared_directory_takes_oldest_owner_time() -> None:
    # usr/share_d is owned by a (payload at 100) and b (payload at 300): an update of b
    # must not move the directory's mtime, since every layer below it carries its entry.
    tree = _tree(usr__share_d=9000, usr__share__a=100, usr__share__b=300)
    own = _own({"usr/share_d": ("a", "b"), "usr/share/a": ("a",), "usr/share/b": ("b",)})
    out = mtimes.apply(tree, own)
    assert out.entries["usr/share_d"].mtime == 100
    bumped = _tree(usr__share_d=9500, usr__share__a=100, usr__share__b=800)
    assert mtimes.apply(bumped, own).entries["usr/share_d"].mtime == 100


def _entries(spec: dict[str, tuple[str, int]] | None = None, **kw: tuple[str, int]) -> FileTree:
    """path (in ``spec``, or a keyword with '__' for '/') -> (kind, mtime)."""
    out = {}
    named = {k.replace("__", "/"): v for k, v in kw.items()}
    for path, (kind, t) in {**named, **(spec or {})}.items():
        out[path] = Entry(path=path, kind=kind, mode=0o755, mtime=t, size=1 if kind == "reg" else 0,
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
                        usr=("dir", now), usr__a=("reg", 100), usr__b=("reg", b_time))

    out = mtimes.apply(tree(9000, 300), own)
    assert out.entries[info].mtime == out.entries["var"].mtime == 100
    assert out.entries[f"{info}/b"].mtime == 300  # dpkg's own file: its package's time
    assert out.entries["var/cache"].mtime == 9000  # nothing owned below, no epoch: kept
    bumped = mtimes.apply(tree(9900, 800), own)
    assert bumped.entries[info].mtime == 100
    assert bumped.entries["usr/b"].mtime == 800


def test_derived_files_clamp_like_their_origin() -> None:
    # py3compile writes __pycache__/mod.cpython-311.pyc at build time; it follows mod.py.
    own = _own({"usr/lib/p/mod.py": ("p",), "usr/lib/p": ("p",)})
    pyc = "usr/lib/p/__pycache__/mod.cpython-311.pyc"

    def tree(now: int) -> FileTree:
        spec = {"usr": ("dir", now), "usr/lib": ("dir", now), "usr/lib/p": ("dir", 50),
                "usr/lib/p/mod.py": ("reg", 100), "usr/lib/p/__pycache__": ("dir", now),
                pyc: ("reg", now)}
        return _entries(spec)

    a, b = mtimes.apply(tree(9000), own), mtimes.apply(tree(9900), own)
    assert a.entries[pyc].mtime == b.entries[pyc].mtime == 100
    assert a.entries["usr/lib/p/__pycache__"].mtime == 100
