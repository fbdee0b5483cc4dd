"""Self-contained: RPMs built and installed by real rpm, read back in every db format.

The truth is what ``rpm -qa --qf`` reports for the sqlite db rpm wrote. The same header
blobs (rpm's own bytes) are then stored as a Berkeley DB hash by libdb's db5.3_load
(which rpm's bdb_ro backend must also accept) and as an ndb Packages.db (written here
following the format; Debian's rpm has no ndb backend), and read back by our readers.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pkgchunk.oci.rootfs import read_rootfs
from pkgchunk.pkgdb.model import PackageDb, PackageDbReader
from pkgchunk.pkgdb.rpm import READERS
from pkgchunk.tree import FileTree
from tests.rpmbuild import (
    SQLITE_DBPATH,
    RpmTruth,
    build_rpms,
    install_sqlite,
    make_tree,
    query_files,
    query_packages,
    sqlite_blobs,
    write_bdb,
    write_ndb,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Built:
    root: Path  # an image root whose rpmdb (sqlite) rpm wrote
    db: Path
    blobs: list[tuple[int, bytes]]
    packages: list[RpmTruth]
    files: set[tuple[str, str, int, int, str, int]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("rpmdb-built")
    rpms = build_rpms(work)
    root = work / "root"
    root.mkdir()
    db = install_sqlite(root, rpms)
    return Built(
        root=root,
        db=db,
        blobs=sqlite_blobs(db),
        packages=query_packages(root, SQLITE_DBPATH),
        files=query_files(root, SQLITE_DBPATH),
    )


def assert_matches_rpm(db: PackageDb, built: Built) -> None:
    got = {p.name: p for p in db.packages}
    assert len(got) == len(db.packages) == len(built.packages) == 3
    for t in built.packages:
        p = got[t.name]
        assert (p.epoch, p.version, p.release, p.arch) == (t.epoch, t.version, t.release, t.arch)
        assert (p.size, p.buildtime, p.installtime) == (t.size, t.buildtime, t.installtime)
        assert p.license == t.license
        assert p.changelog_times == t.changelog_times
        assert t.sourcerpm is not None and t.sourcerpm.startswith(p.source + "-")
    # Known by construction: demo-tools is a subpackage of the pkgchunk-demo source.
    assert got["demo-tools"].source == got["pkgchunk-demo"].source == "pkgchunk-demo"
    assert got["tiny"].source == "tiny"
    assert got["pkgchunk-demo"].changelog_times[0] > got["pkgchunk-demo"].changelog_times[1]
    mine = {
        (p.name, f.path, f.mode, f.size, f.digest, f.flags) for p in db.packages for f in p.files
    }
    assert mine == built.files
    assert {f.path for f in got["tiny"].files} >= {"/opt/with space", "/opt/café"}


# -- one way to lay out each format; a format added to READERS must add its layout here --------


def _sqlite(built: Built, root: Path) -> tuple[FileTree, str]:
    """The root rpm itself wrote (rpmdb.sqlite, -shm, -wal, .rpm.lock)."""
    return read_rootfs(str(built.root)).tree, "usr/lib/sysimage/rpm/rpmdb.sqlite"


def _bdb(built: Built, root: Path) -> tuple[FileTree, str]:
    dbdir = root / "var/lib/rpm"
    dbdir.mkdir(parents=True)
    write_bdb(dbdir / "Packages", built.blobs)
    return read_rootfs(str(root)).tree, "var/lib/rpm/Packages"


def _ndb(built: Built, root: Path) -> tuple[FileTree, str]:
    dbdir = root / "usr/lib/sysimage/rpm"
    dbdir.mkdir(parents=True)
    write_ndb(dbdir / "Packages.db", built.blobs)
    return make_tree(root, links={"var/lib/rpm": "../../usr/lib/sysimage/rpm"}), (
        "usr/lib/sysimage/rpm/Packages.db"
    )


LAYOUTS: dict[str, Callable[[Built, Path], tuple[FileTree, str]]] = {
    "rpm-sqlite": _sqlite,
    "rpm-bdb": _bdb,
    "rpm-ndb": _ndb,
}


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.format)
def test_reader_matches_rpm(reader: PackageDbReader, built: Built, tmp_path: Path) -> None:
    tree, path = LAYOUTS[reader.format](built, tmp_path)
    assert reader.detect(tree) == [path]
    for other in READERS:
        if other is not reader:
            assert other.detect(tree) == []
    db = reader.read(tree, path)
    assert db.format == reader.format and db.path == path
    assert all(p.db == reader.format for p in db.packages)
    assert_matches_rpm(db, built)


def test_sqlite_paths_are_what_rpm_wrote(built: Built) -> None:
    tree = read_rootfs(str(built.root)).tree
    (reader,) = [r for r in READERS if r.format == "rpm-sqlite"]
    db = reader.read(tree, "usr/lib/sysimage/rpm/rpmdb.sqlite")
    written = {str(p.relative_to(built.root)) for p in built.db.parent.iterdir() if p.is_file()}
    assert "usr/lib/sysimage/rpm/rpmdb.sqlite-wal" in written  # rpm leaves its WAL files
    assert set(db.paths) == written


def test_sqlite_replays_committed_wal(built: Built, tmp_path: Path) -> None:
    """A transaction still in rpmdb.sqlite-wal (not checkpointed) is part of the db."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(built.db, work / "rpmdb.sqlite")
    conn = sqlite3.connect(work / "rpmdb.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        conn.execute("PRAGMA wal_autocheckpoint=0")
        (tiny,) = [h for h, b in built.blobs if b"tiny\0" in b]
        conn.execute("DELETE FROM Packages WHERE hnum = ?", (tiny,))
        conn.commit()
        # Snapshot while the connection is open: closing would checkpoint the WAL.
        image = tmp_path / "image/usr/lib/sysimage/rpm"
        image.mkdir(parents=True)
        for name in ("rpmdb.sqlite", "rpmdb.sqlite-wal"):
            shutil.copy(work / name, image / name)
    finally:
        conn.close()
    assert (image / "rpmdb.sqlite-wal").stat().st_size > 0
    (reader,) = [r for r in READERS if r.format == "rpm-sqlite"]
    path = "usr/lib/sysimage/rpm/rpmdb.sqlite"
    db = reader.read(read_rootfs(str(tmp_path / "image")).tree, path)
    assert sorted(p.name for p in db.packages) == ["demo-tools", "pkgchunk-demo"]
    # Without the WAL the main file alone still lists all three.
    (image / "rpmdb.sqlite-wal").unlink()
    db = reader.read(read_rootfs(str(tmp_path / "image")).tree, path)
    assert len(db.packages) == 3
    assert not list(image.glob("*-shm"))  # the image copy was never opened by sqlite


@pytest.mark.parametrize(
    ("config", "big_endian"),
    [
        pytest.param(["db_pagesize=512"], False, id="512-byte-pages"),
        pytest.param(["db_pagesize=65536"], False, id="64k-pages"),
        pytest.param(["db_lorder=4321"], True, id="big-endian"),
        pytest.param(["chksum=1"], False, id="checksums"),
    ],
)
def test_bdb_variants(built: Built, tmp_path: Path, config: list[str], big_endian: bool) -> None:
    dbdir = tmp_path / "usr/share/rpm"
    dbdir.mkdir(parents=True)
    write_bdb(dbdir / "Packages", built.blobs, config=config, big_endian_keys=big_endian)
    if "chksum=1" not in config:  # rpm's bdb_ro does not read checksummed pages
        truth = query_packages(tmp_path, "/usr/share/rpm", backend="bdb_ro")
        assert sorted(truth, key=lambda t: t.name) == sorted(built.packages, key=lambda t: t.name)
    tree = make_tree(
        tmp_path, {"usr/share/rpm/__db.001": b"\0" * 64}, {"var/lib/rpm": "../../usr/share/rpm"}
    )
    (reader,) = [r for r in READERS if r.format == "rpm-bdb"]
    assert reader.detect(tree) == ["usr/share/rpm/Packages"]
    db = reader.read(tree, "usr/share/rpm/Packages")
    assert db.paths == ("usr/share/rpm/Packages", "usr/share/rpm/__db.001")
    assert_matches_rpm(db, built)
