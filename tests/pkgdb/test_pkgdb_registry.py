"""Contract tests run for every registered package database reader: a new format added to
the registry gets them too."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pkgchunk.errors import PkgdbError
from pkgchunk.pkgdb import registry
from pkgchunk.pkgdb.model import Format, PackageDbReader
from pkgchunk.tree import FileTree
from tests.debbuild import admindir_files, hand_tree
from tests.helpers import shared_fixtures

READERS = registry.readers()
IDS = [r.format for r in READERS]

#: Every place a database of some format may live.
DB_LOCATIONS = [
    f"{d}/{name}"
    for d in ("var/lib/rpm", "usr/lib/sysimage/rpm")
    for name in ("rpmdb.sqlite", "Packages", "Packages.db")
] + ["var/lib/dpkg/status", "var/lib/dpkg/status.d/pkg"]


def _real_db(fmt: str) -> tuple[FileTree, int]:
    """A tree holding one real database of ``fmt`` (read in place) and its package count."""
    fx = shared_fixtures()
    if fmt.startswith("rpm"):
        name, dbfile, where = {
            "rpm-sqlite": ("cbl-mariner-2.0-sqlite", "rpmdb.sqlite", "var/lib/rpm"),
            "rpm-bdb": ("cbl-mariner-2.0-bdb-DERIVED", "Packages", "var/lib/rpm"),
            "rpm-ndb": ("sle15-bci-minimal-15.3-ndb", "Packages.db", "usr/lib/sysimage/rpm"),
        }[fmt]
        d = fx / "rpmdb" / name
        count = json.loads((d / "expected.json").read_text())["package_count"]
        return hand_tree({f"{where}/{dbfile}": d / dbfile}), count
    if fmt == "dpkg":
        d = fx / "dpkg" / "debian-12-bookworm-minbase"
        files = {k: v for k, v in admindir_files(d).items() if v.suffix not in (".json", ".tsv")}
        return hand_tree(files), json.loads((d / "expected.json").read_text())["installed_count"]
    if fmt == "dpkg-status.d":
        d = fx / "dpkg" / "distroless-debian11-arm64-status.d"
        return hand_tree(admindir_files(d / "status.d", "var/lib/dpkg/status.d")), 1
    raise AssertionError(f"no fixture for {fmt}: add one here")


def test_every_format_has_exactly_one_reader() -> None:
    assert sorted(IDS) == sorted(get_args(Format))


@pytest.mark.parametrize("reader", READERS, ids=IDS)
def test_nothing_detected_without_a_database(reader: PackageDbReader) -> None:
    assert reader.detect(FileTree()) == []
    tree = hand_tree({"etc/passwd": Path(os.devnull)}, dirs=["var/lib/rpm", "var/lib/dpkg"])
    assert reader.detect(tree) == []


@pytest.mark.parametrize("reader", READERS, ids=IDS)
def test_reads_its_real_database_and_only_it_detects_it(reader: PackageDbReader) -> None:
    tree, count = _real_db(reader.format)
    (path,) = reader.detect(tree)
    db = reader.read(tree, path)
    assert db.format == reader.format and db.path == path
    assert len(db.packages) == count
    assert len({p.key for p in db.packages}) == count
    assert all(p in tree for p in db.paths)
    assert all(f.path.startswith("/") for p in db.packages for f in p.files)
    others = [r.format for r in READERS if r is not reader and r.detect(tree)]
    assert others == []


GARBAGE = b"\x00\x01garbage\xff" * 300


def _garbage_tree(tmp_path: Path, data: bytes) -> FileTree:
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    return hand_tree({loc: blob for loc in DB_LOCATIONS})


@pytest.mark.parametrize("reader", READERS, ids=IDS)
def test_garbage_database_is_a_pkgdb_error_naming_it(
    reader: PackageDbReader, tmp_path: Path
) -> None:
    tree = _garbage_tree(tmp_path, GARBAGE)
    found = reader.detect(tree)
    assert found, "a file at the format's usual place is detected (and then rejected)"
    for path in found:
        with pytest.raises(PkgdbError) as err:
            reader.read(tree, path)
        # '<image>: <file>: <problem>' (status.d names the stanza file inside the directory)
        assert str(err.value).startswith(f"hand: {path}")


@pytest.mark.filterwarnings("ignore::pkgchunk.errors.PkgdbWarning")
@pytest.mark.parametrize("reader", READERS, ids=IDS)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=3000))
def test_random_bytes_never_escape_as_other_errors(
    reader: PackageDbReader, tmp_path: Path, data: bytes
) -> None:
    tree = _garbage_tree(tmp_path, data)
    for path in reader.detect(tree):
        with contextlib.suppress(PkgdbError):
            reader.read(tree, path)
