"""The rpm readers on real databases from real images (the shared fixtures, read in place).

Each fixture is laid out at a real rpmdb location of a temporary root (copied there at
test time), sometimes behind the image's own directory symlinks, read back through
read_rootfs, and compared with what rpm 4.18 reported for it (expected.json, files.tsv).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pkgchunk.pkgdb.model import (
    FLAG_CONFIG,
    FLAG_DOC,
    FLAG_GHOST,
    FLAG_LICENSE,
    FLAG_MISSINGOK,
    FLAG_NOREPLACE,
    PackageDb,
    PackageDbReader,
)
from pkgchunk.pkgdb.rpm import READERS
from pkgchunk.tree import FileTree
from tests.helpers import shared_fixtures
from tests.rpmbuild import make_tree


@dataclass(frozen=True)
class Layout:
    """Where a fixture's db goes in the image, which links lead there, and extra db files."""

    db_file: str
    format: str
    location: str
    links: tuple[tuple[str, str], ...] = ()
    companions: tuple[str, ...] = ()


FIXTURES = {
    "cbl-mariner-2.0-sqlite": Layout(
        "rpmdb.sqlite", "rpm-sqlite", "var/lib/rpm/rpmdb.sqlite",
        companions=("rpmdb.sqlite-shm", "rpmdb.sqlite-wal", ".rpm.lock"),
    ),
    "fedora36-tzdata-sqlite": Layout(
        "rpmdb.sqlite", "rpm-sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite",
        links=(("var/lib/rpm", "../../usr/lib/sysimage/rpm"),),
    ),
    "rhel8-libuuid-bdb": Layout(
        "Packages", "rpm-bdb", "var/lib/rpm/Packages",
        companions=("Name", "Basenames", "__db.001", "__db.002", ".dbenv.lock", ".rpm.lock"),
    ),
    # rpm-ostree keeps the db under /usr/share/rpm with /var/lib/rpm linking to it.
    "fedora32-hello-epoch-bdb": Layout(
        "Packages_epoch", "rpm-bdb", "usr/share/rpm/Packages",
        links=(("var/lib/rpm", "../../usr/share/rpm"),),
    ),
    "cbl-mariner-2.0-bdb-DERIVED": Layout("Packages", "rpm-bdb", "var/lib/rpm/Packages"),
    # SUSE: /usr/lib/sysimage/rpm with an absolute /var/lib/rpm link.
    "sle15-bci-minimal-15.3-ndb": Layout(
        "Packages.db", "rpm-ndb", "usr/lib/sysimage/rpm/Packages.db",
        links=(("var/lib/rpm", "/usr/lib/sysimage/rpm"),),
        companions=("Index.db",),
    ),
}  # fmt: skip

#: rpm's %{FILEFLAGS:fflags} letters (specfile 's', readme 'r', artifact 'a' have no model name).
FFLAGS = (
    (FLAG_DOC, "d"), (FLAG_CONFIG, "c"), (1 << 5, "s"), (FLAG_MISSINGOK, "m"),
    (FLAG_NOREPLACE, "n"), (FLAG_GHOST, "g"), (FLAG_LICENSE, "l"), (1 << 8, "r"), (1 << 12, "a"),
)  # fmt: skip

_SRPM = re.compile(r"(?P<name>.+)-[^-]+-[^-]+\.(?:no)?src\.rpm\Z")


def fflags(flags: int) -> frozenset[str]:
    return frozenset(letter for bit, letter in FFLAGS if flags & bit)


@dataclass
class Loaded:
    layout: Layout
    tree: FileTree
    expected: dict[str, Any]
    fixture_dir: Path


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    name: str = request.param
    fixture_dir = shared_fixtures() / "rpmdb" / name
    layout = FIXTURES[name]
    dbdir = layout.location.rpartition("/")[0]
    files: dict[str, Path | bytes] = {layout.location: fixture_dir / layout.db_file}
    files.update({f"{dbdir}/{c}": b"" for c in layout.companions})
    files[f"{dbdir}/macros.not-a-db"] = b"%_foo bar\n"  # not an rpmdb file
    files["etc/os-release"] = b"ID=test\n"
    tree = make_tree(tmp_path_factory.mktemp(name), files, dict(layout.links))
    expected = json.loads((fixture_dir / "expected.json").read_text())
    return Loaded(layout, tree, expected, fixture_dir)


def _read(loaded: Loaded) -> PackageDb:
    (reader,) = [r for r in READERS if r.format == loaded.layout.format]
    return reader.read(loaded.tree, loaded.layout.location)


def test_detect_finds_the_db_once_through_links(loaded: Loaded) -> None:
    for reader in READERS:
        want = [loaded.layout.location] if reader.format == loaded.layout.format else []
        assert reader.detect(loaded.tree) == want, reader.format


@pytest.mark.parametrize(
    "loaded", sorted(n for n, layout in FIXTURES.items() if layout.links), indirect=True
)
def test_read_through_the_image_links(loaded: Loaded) -> None:
    """A path through the image's own links (/var/lib/rpm -> ...) reads the same db."""
    for link, _ in loaded.layout.links:
        (reader,) = [r for r in READERS if r.format == loaded.layout.format]
        name = loaded.layout.location.rpartition("/")[2]
        db = reader.read(loaded.tree, f"{link}/{name}")
        assert db.path == loaded.layout.location
        assert db.packages == _read(loaded).packages


def test_packages_match_rpm(loaded: Loaded) -> None:
    db = _read(loaded)
    assert db.format == loaded.layout.format
    assert db.path == loaded.layout.location
    exp = loaded.expected["packages"]
    assert len(db.packages) == loaded.expected["package_count"] == len(exp)

    def key(
        name: str, epoch: int | None, version: str, release: str, arch: str | None
    ) -> tuple[object, ...]:
        return (name, epoch, version, release, arch or "")

    got = {key(p.name, p.epoch, p.version, p.release, p.arch): p for p in db.packages}
    want = {key(e["name"], e["epoch"], e["version"], e["release"], e["arch"]): e for e in exp}
    assert set(got) == set(want)
    for k, e in want.items():
        p = got[k]
        m = _SRPM.match(e["sourcerpm"] or "")
        assert p.source == (m["name"] if m else e["name"]), k
        assert p.size == e["size"], k
        assert p.license == (e["license"] or ""), k
        assert p.db == loaded.layout.format
        assert list(p.changelog_times) == sorted(p.changelog_times, reverse=True)


SPOT_CHECKED = {
    "cbl-mariner-2.0-sqlite": "spot_check_from_go_rpmdb_test",
    "rhel8-libuuid-bdb": "spot_check_from_go_rpmdb_test",
    "fedora32-hello-epoch-bdb": "spot_check_from_osv_scalibr_test",
}


@pytest.mark.parametrize("loaded", sorted(SPOT_CHECKED), indirect=True)
def test_spot_checks_from_upstream_projects(loaded: Loaded) -> None:
    """The values go-rpmdb / osv-scalibr assert in their own tests for these files."""
    spot = loaded.expected[SPOT_CHECKED[loaded.expected["fixture"]]]
    db = _read(loaded)
    (p,) = [p for p in db.packages if p.name == spot["name"]]
    for field in ("epoch", "version", "release", "arch", "license", "size"):
        if field in spot:
            assert getattr(p, field) == spot[field], field
    if "install_time" in spot:
        assert p.installtime == spot["install_time"]
    assert spot["sourcerpm"].startswith(p.source + "-")


@pytest.mark.parametrize("loaded", ["sle15-bci-minimal-15.3-ndb"], indirect=True)
def test_ndb_matches_go_rpmdb_reference(loaded: Loaded) -> None:
    """A second, independent expectation for the ndb file: go-rpmdb's own test list."""
    db = _read(loaded)
    ref = loaded.expected["reference"]["packages"]
    got = {(p.name, p.epoch, p.version, p.release, p.arch, p.size) for p in db.packages}
    assert got == {
        (r["name"], r["epoch"], r["version"], r["release"], r["arch"] or "", r["size"]) for r in ref
    }


def test_files_match_files_tsv(loaded: Loaded) -> None:
    db = _read(loaded)
    nevra = {
        e["nevra"]: (e["name"], e["epoch"], e["version"], e["release"], e["arch"] or "")
        for e in loaded.expected["packages"]
    }
    want = set()
    with open(loaded.fixture_dir / "files.tsv", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if not r[0].startswith("#")]
    for r in rows:
        want.add((nevra[r[0]], r[1], int(r[2], 8), int(r[3]), r[4], frozenset(r[5])))
    got = {
        ((p.name, p.epoch, p.version, p.release, p.arch), f.path, f.mode, f.size, f.digest,
         fflags(f.flags))
        for p in db.packages
        for f in p.files
    }  # fmt: skip
    assert len(rows) == loaded.expected["file_entry_count"]
    assert sum(len(p.files) for p in db.packages) == len(rows)
    assert got == want


def test_db_paths_are_the_db_and_its_companions(loaded: Loaded) -> None:
    db = _read(loaded)
    dbdir = loaded.layout.location.rpartition("/")[0]
    assert db.paths[0] == loaded.layout.location
    assert set(db.paths) == {loaded.layout.location} | {
        f"{dbdir}/{c}" for c in loaded.layout.companions
    }


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.format)
def test_every_reader_has_a_real_fixture(reader: PackageDbReader) -> None:
    """Adding a format to READERS without a real database to test it on fails here."""
    assert any(layout.format == reader.format for layout in FIXTURES.values())
