"""Mapping database paths to tree paths: merged /usr, package-owned symlinks, several
owners, the pkgdb category, corrupt databases, and speed at Fedora scale."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import pytest

from pkgchunk.errors import PkgdbError, PkgdbWarning
from pkgchunk.pkgdb.model import Format, Package, PackageDb, PkgFile
from pkgchunk.pkgdb.ownership import PathMapper, collect, owned_paths
from pkgchunk.tree import DataRef, Entry, FileTree
from tests.debbuild import hand_tree
from tests.helpers import shared_fixtures

NULL = Path(os.devnull)


class FakeReader:
    """A reader that 'finds' one database listing the given packages (or fails)."""

    def __init__(
        self,
        packages: list[Package],
        *,
        fmt: Format = "rpm-sqlite",
        path: str = "var/lib/db",
        db_paths: tuple[str, ...] = (),
        fail: str = "",
        warn: str = "",
    ) -> None:
        self.format: Format = fmt
        self.packages = packages
        self.path = path
        self.db_paths = db_paths
        self.fail = fail
        self.warn = warn

    def detect(self, tree: FileTree) -> list[str]:
        return [self.path]

    def read(self, tree: FileTree, path: str) -> PackageDb:
        if self.warn:
            warnings.warn(self.warn, PkgdbWarning, stacklevel=1)
        if self.fail:
            raise PkgdbError(f"{path}: {self.fail}")
        return PackageDb(self.format, path, tuple(self.packages), self.db_paths)


def pkg(name: str, *paths: str, arch: str = "all") -> Package:
    return Package(
        name=name,
        version="1",
        arch=arch,
        source=name,
        files=tuple(PkgFile(p) for p in paths),
        db="dpkg",
    )


def merged_tree() -> FileTree:
    files = {
        p: NULL
        for p in (
            "usr/bin/ls",
            "usr/bin/sh-real",
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            "usr/share/doc/a/copyright",
            "etc/passwd",
            "opt/stray",
            "var/lib/db",
        )
    }
    return hand_tree(
        files,
        dirs=["usr/lib/x86_64-linux-gnu", "tmp"],
        symlinks={
            "bin": "usr/bin",
            "lib": "/usr/lib",  # absolute: resolved inside the image, never on the host
            "usr/bin/sh": "sh-real",
            "loop1": "loop2",
            "loop2": "loop1",
            "usr/share/doc/b": "a",
        },
    )


def test_mapper_resolves_parents_not_the_last_component() -> None:
    m = PathMapper(merged_tree())
    assert m("/bin/ls") == "usr/bin/ls"
    assert m("/usr/bin/ls") == "usr/bin/ls"
    assert m("/lib/x86_64-linux-gnu/libc.so.6") == "usr/lib/x86_64-linux-gnu/libc.so.6"
    assert m("/bin") == "bin"  # a listed directory that became a symlink: the symlink
    assert m("/bin/sh") == "usr/bin/sh"  # package-owned symlink is owned itself
    assert m("/usr/share/doc/b") == "usr/share/doc/b"
    assert m("/usr/share/doc/b/copyright") == "usr/share/doc/a/copyright"
    assert m("/usr/./bin//ls") == "usr/bin/ls"
    assert m("/usr/sbin/../bin/ls") == "usr/bin/ls"
    assert m("/nonexistent/file") is None
    assert m("/etc/passwd/child") is None  # parent is a file
    assert m("/loop1/x") is None
    assert m("/") is None
    assert m("/.") is None
    assert m("/../../etc/passwd") is None


def test_collect_owners_pkgdb_and_unowned() -> None:
    tree = merged_tree()
    reader = FakeReader(
        [
            pkg("coreutils", "/bin", "/bin/ls", "/usr/share/doc/a/copyright"),
            pkg("dash", "/bin", "/bin/sh", "/usr/share/doc/a/copyright", "/var/lib/db"),
            pkg("libc6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib/missing.so", arch="amd64"),
        ],
        db_paths=("var/lib/db", "var/lib/db-gone"),
    )
    own = collect(tree, readers=[reader])
    assert own.owners == {
        "bin": ("coreutils:all", "dash:all"),
        "usr/bin/ls": ("coreutils:all",),
        "usr/bin/sh": ("dash:all",),
        "usr/share/doc/a/copyright": ("coreutils:all", "dash:all"),
        "usr/lib/x86_64-linux-gnu/libc.so.6": ("libc6:amd64",),
    }
    # the database file is its own category even when a package lists it
    assert own.pkgdb_paths == {"var/lib/db"}
    assert "usr/bin/sh-real" in tree and "usr/bin/sh-real" not in own.owners
    assert owned_paths(own)["dash:all"] == ["bin", "usr/bin/sh", "usr/share/doc/a/copyright"]
    assert own.warnings == ()


def test_corrupt_db_fails_or_is_skipped() -> None:
    tree = merged_tree()
    bad = FakeReader([pkg("x", "/bin/ls")], fail="bad magic")
    good = FakeReader([pkg("y", "/etc/passwd")], fmt="dpkg", path="var/lib/other")
    with pytest.raises(PkgdbError, match=r"^var/lib/db: bad magic"):
        collect(tree, readers=[bad, good])
    own = collect(tree, readers=[bad, good], ignore_errors=True)
    assert own.owners == {"etc/passwd": ("y:all",)}
    assert [db.format for db in own.dbs] == ["dpkg"]
    assert own.pkgdb_paths == {"var/lib/db"}
    (note,) = own.warnings
    assert note.startswith("var/lib/db: bad magic") and "unowned" in note


def test_reader_warnings_are_collected_duplicates_noted() -> None:
    tree = merged_tree()
    a = FakeReader([pkg("x", "/bin/ls")], warn="odd stanza")
    b = FakeReader([pkg("x", "/etc/passwd")], fmt="dpkg", path="var/lib/other")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak out as a real warning
        own = collect(tree, readers=[a, b])
    assert own.warnings[0] == "odd stanza"
    assert "x:all is also in another database" in own.warnings[1]
    assert own.owners == {"usr/bin/ls": ("x:all",)}


def test_no_database_everything_unowned() -> None:
    own = collect(merged_tree())
    assert (own.dbs, own.owners, own.pkgdb_paths) == ((), {}, frozenset())


def test_fedora_scale_is_fast() -> None:
    """200k paths listed as /bin/... and /usr/... through a merged-/usr symlink."""
    entries: dict[str, Entry] = {}
    listed: list[str] = []
    ref = DataRef(os.devnull)
    for d in range(2000):
        dpath = f"usr/bin/d{d}"
        entries[dpath] = Entry(dpath, "dir", 0o755)
        for f in range(100):
            p = f"{dpath}/f{f}"
            entries[p] = Entry(p, "reg", 0o644, size=1, data=ref)
            listed.append(("/bin/" if f % 2 else "/usr/bin/") + p[8:])
    entries["usr"] = Entry("usr", "dir", 0o755)
    entries["usr/bin"] = Entry("usr/bin", "dir", 0o755)
    entries["bin"] = Entry("bin", "sym", 0o777, target="usr/bin")
    tree = FileTree(entries)
    packages = [pkg(f"p{i}", *listed[i::1000]) for i in range(1000)]
    start = time.perf_counter()
    own = collect(tree, readers=[FakeReader(packages)])
    elapsed = time.perf_counter() - start
    assert len(own.owners) == 200_000
    assert elapsed < 10, elapsed


def _rpm_tree(fixture: Path, db_name: str) -> tuple[FileTree, list[list[str]]]:
    """The rpm db in place at var/lib/rpm plus every path of files.tsv with its kind.

    Mariner's filesystem package ships /bin, /lib, /lib64, /sbin, /usr/lib64 and /var/run
    as directory symlinks (their targets are not in files.tsv, only their lengths).
    """
    rows = [
        line.split("\t")
        for line in (fixture / "files.tsv").read_text().splitlines()
        if not line.startswith("#")
    ]
    files: dict[str, Path] = {}
    dirs: list[str] = []
    links: dict[str, str] = {}
    for _nevra, path, mode, *_ in rows:
        rel = path.lstrip("/")
        real = _through_links(rel)  # /bin/x lives in usr/bin
        if rel in DIR_LINKS:
            links[rel] = DIR_LINKS[rel][0]
        elif mode.startswith("40"):
            dirs.append(real)
        elif mode.startswith("12"):
            links[real] = "target"
        else:
            files[real] = NULL
    files["var/lib/rpm/" + db_name] = fixture / db_name
    return hand_tree(files, dirs=dirs, symlinks=links), rows


#: Directory symlinks of Mariner's filesystem package: path -> (link text, where it leads).
DIR_LINKS = {
    "bin": ("usr/bin", "usr/bin"),
    "sbin": ("usr/sbin", "usr/sbin"),
    "lib": ("usr/lib", "usr/lib"),
    "lib64": ("usr/lib", "usr/lib"),
    "usr/lib64": ("lib", "usr/lib"),
    "var/run": ("../run", "run"),
}


def _through_links(path: str) -> str:
    rel = path.lstrip("/")
    for link, (_text, real) in DIR_LINKS.items():
        if rel.startswith(link + "/"):
            return real + rel[len(link) :]
    return rel


def test_rpm_fixture_ownership_matches_files_tsv() -> None:
    fixture = shared_fixtures() / "rpmdb" / "cbl-mariner-2.0-sqlite"
    tree, rows = _rpm_tree(fixture, "rpmdb.sqlite")
    own = collect(tree)
    assert [db.format for db in own.dbs] == ["rpm-sqlite"]
    expected_pkgs = json.loads((fixture / "expected.json").read_text())["packages"]
    by_fields = {(p.name, p.version, p.release, p.arch): k for k, p in own.packages.items()}
    key_of = {
        p["nevra"]: by_fields[(p["name"], p["version"], p["release"], p["arch"] or "")]
        for p in expected_pkgs
    }
    expected: dict[str, set[str]] = {}
    for nevra, path, *_ in rows:
        tp = _through_links(path)
        if tp in tree:
            expected.setdefault(tp, set()).add(key_of[nevra])
    assert len(expected) > 6000
    assert expected["usr/bin/bash"] == {key_of["bash-5.1.8-1.cm2.x86_64"]}  # listed as /bin/bash
    got = {p: set(k) for p, k in own.owners.items()}
    assert got == {p: k for p, k in expected.items() if p not in own.pkgdb_paths}
    assert "var/lib/rpm/rpmdb.sqlite" in own.pkgdb_paths
