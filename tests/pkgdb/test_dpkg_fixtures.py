"""The dpkg readers on real databases (shared fixtures, read in place) against what
dpkg-query reported for them (expected.json, owners.tsv)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pkgchunk.pkgdb.model import Ownership
from pkgchunk.pkgdb.ownership import collect
from pkgchunk.tree import FileTree
from tests.debbuild import admindir_files, hand_tree
from tests.helpers import shared_fixtures

BOOKWORM = ["debian-12-bookworm-minbase", "debian-12-bookworm-minbase-no-security"]
#: Top-level directories that are symlinks into /usr on a merged-/usr system.
MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: Files of the fixture directory that are not part of the database.
NOT_DB = {"expected.json", "owners.tsv"}


def _fixture(name: str) -> Path:
    return shared_fixtures() / "dpkg" / name


def _expected(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((_fixture(name) / "expected.json").read_text())
    return data


def _db_files(name: str) -> dict[str, Path]:
    return {
        tp: host for tp, host in admindir_files(_fixture(name)).items() if host.name not in NOT_DB
    }


def _owners_tsv(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (_fixture(name) / "owners.tsv").read_text().splitlines():
        if line.startswith("#") or not line:
            continue
        path, _, owners = line.partition("\t")
        out[path] = owners.split(",")
    return out


def _merged(path: str) -> str:
    """Where a listed path is on merged /usr: '/bin/ls' -> 'usr/bin/ls', '/bin' stays 'bin'."""
    rel = path.lstrip("/")
    top, sep, rest = rel.partition("/")
    return f"usr/{top}/{rest}" if sep and top in MERGED else rel


def _bookworm_tree(name: str, listed: list[str]) -> FileTree:
    """The fixture's admindir plus every listed path, laid out merged-/usr."""
    db = _db_files(name)
    mapped = {_merged(p) for p in listed}
    parents = {m.rpartition("/")[0] for m in mapped | db.keys()}
    dummy = Path(os.devnull)  # payload content does not matter here
    files = {m: dummy for m in mapped if m not in parents and m.partition("/")[0] not in MERGED}
    dirs = [m for m in mapped if m in parents]
    links = {top: f"usr/{top}" for top in MERGED if any(p.startswith(f"/{top}/") for p in listed)}
    files.update(db)
    return hand_tree(files, dirs=dirs, symlinks=links, label=name)


@pytest.fixture(scope="module", params=BOOKWORM)
def bookworm(request: pytest.FixtureRequest) -> tuple[str, FileTree, Ownership]:
    name: str = request.param
    listed = list(_owners_tsv(name))
    tree = _bookworm_tree(name, listed)
    return name, tree, collect(tree)


def _installed(expected: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {
        (p["package"], p["version"], p["architecture"], p["source_package"])
        for p in expected["packages"]
        if p["status_abbrev"][1] == "i"
    }


def _got(own: Ownership) -> set[tuple[str, str, str, str]]:
    return {(p.name, p.evr, p.arch, p.source) for p in own.packages.values()}


def test_bookworm_package_list(bookworm: tuple[str, FileTree, Ownership]) -> None:
    name, _tree, own = bookworm
    expected = _expected(name)
    assert _got(own) == _installed(expected)
    assert len(own.packages) == expected["installed_count"] == 96
    sizes = {
        f"{p['package']}:{p['architecture']}": p["installed_size_kib"] for p in expected["packages"]
    }
    assert {k: p.size // 1024 for k, p in own.packages.items()} == sizes
    assert own.warnings == ()


def test_bookworm_ownership_matches_owners_tsv(bookworm: tuple[str, FileTree, Ownership]) -> None:
    name, tree, own = bookworm
    arch = {p["package"]: p["architecture"] for p in _expected(name)["packages"]}
    expected: dict[str, set[str]] = {}
    for path, owners in _owners_tsv(name).items():
        keys = {o if ":" in o else f"{o}:{arch[o]}" for o in owners}
        expected.setdefault(_merged(path), set()).update(keys)
    assert len(expected) > 8000
    wrong = {
        tp: (own.owners.get(tp), sorted(keys))
        for tp, keys in expected.items()
        if tuple(sorted(keys)) != own.owners.get(tp)
    }
    assert wrong == {}
    # merged /usr: listed as /bin/..., found under usr/bin; the bin symlink keeps /bin's owners
    assert tree.entries["bin"].kind == "sym"
    assert own.owners["usr/bin/bash"] == ("bash:amd64",)
    assert own.owners["usr/lib64/ld-linux-x86-64.so.2"] == ("libc6:amd64",)


def test_bookworm_info_files_owned_rest_is_pkgdb(bookworm: tuple[str, FileTree, Ownership]) -> None:
    name, tree, own = bookworm
    for p in _expected(name)["packages"]:
        key = f"{p['package']}:{p['architecture']}"
        list_file = "var/lib/dpkg/" + p["list_file"]
        assert own.owners[list_file] == (key,)
    assert {"var/lib/dpkg/status", "var/lib/dpkg/diversions", "var/lib/dpkg/info/format"} == {
        p for p in own.pkgdb_paths if tree.entries[p].kind == "reg"
    }
    assert all(p not in own.owners for p in own.pkgdb_paths)


def test_bookworm_diversion_keeps_dash_sh(bookworm: tuple[str, FileTree, Ownership]) -> None:
    _name, _tree, own = bookworm
    dash = own.packages["dash:amd64"]
    paths = {f.path for f in dash.files}
    # dash diverts /bin/sh away from every *other* package; its own /bin/sh stays
    assert "/bin/sh" in paths and "/bin/sh.distrib" not in paths
    assert own.owners["usr/bin/sh"] == ("dash:amd64",)


def test_bookworm_update_changes_exactly_the_listed_versions() -> None:
    diff = json.loads((shared_fixtures() / "dpkg" / "apt-versions.json").read_text())
    changed = diff["installed_version_diff"]
    old, new = (
        {p.key: p for p in collect(_bookworm_tree(n, [])).packages.values()} for n in BOOKWORM[::-1]
    )
    assert old.keys() == new.keys()
    moved = {k for k in old if old[k].evr != new[k].evr}
    # apt-versions.json names packages like dpkg-query's ${binary:Package}
    key_of = {p.name: p.key for p in new.values()} | {p.key: p.key for p in new.values()}
    assert moved == {key_of[k] for k in changed}
    assert len(moved) == 13
    for k, versions in changed.items():
        assert (old[key_of[k]].evr, new[key_of[k]].evr) == (
            versions["no_security"],
            versions["with_updates_security"],
        )


def test_ubuntu_status_only() -> None:
    name = "ubuntu-18.04-status-only"
    tree = hand_tree({"var/lib/dpkg/status": _fixture(name) / "status"})
    own = collect(tree)
    expected = _expected(name)
    assert _got(own) == _installed(expected)
    assert len(own.packages) == expected["installed_count"] == 90
    assert len(expected["packages"]) == 91
    assert not any(p.name == "git" for p in own.packages.values())  # deinstall ok config-files
    assert own.owners == {}
    assert own.pkgdb_paths == {"var/lib/dpkg", "var/lib/dpkg/status"}


def test_distroless_status_d() -> None:
    name = "distroless-debian11-arm64-status.d"
    fx = _fixture(name)
    (exp,) = _expected(name)["packages"]
    dummy = fx / "status.d" / "libsqlite3-0"
    files = {p.lstrip("/"): dummy for p in exp["files_from_md5sums"]}
    files.update(
        {
            "var/lib/dpkg/status.d/libsqlite3-0": fx / "status.d/libsqlite3-0",
            "var/lib/dpkg/status.d/libsqlite3-0.md5sums": fx / "status.d/libsqlite3-0.md5sums",
        }
    )
    tree = hand_tree(files)
    own = collect(tree)
    assert [db.format for db in own.dbs] == ["dpkg-status.d"]
    (pkg,) = own.packages.values()
    assert (pkg.name, pkg.evr, pkg.arch, pkg.source) == (
        exp["package"],
        exp["version"],
        exp["architecture"],
        exp["source_package"],
    )
    assert pkg.size == exp["installed_size_kib"] * 1024
    md5 = {f.path: f.digest for f in pkg.files if f.digest}
    assert md5 == exp["md5sums"]
    for p in exp["files_from_md5sums"]:
        assert own.owners[p.lstrip("/")] == (pkg.key,)
    assert own.owners["var/lib/dpkg/status.d/libsqlite3-0"] == (pkg.key,)
    assert own.pkgdb_paths == {"var/lib/dpkg/status.d"}
