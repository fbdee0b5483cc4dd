"""A stale second rpm database (an old BDB ``Packages`` beside the active ``rpmdb.sqlite``)
is not merged: the backend rpm would read wins (the image's ``%_db_backend``, else the
newest format present) and the other is named in a warning. Real databases from
/work/shared/fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.oci.rootfs import read_rootfs
from pkgchunk.pkgdb.ownership import collect
from tests.helpers import shared_fixtures

MARINER = 129  # packages in cbl-mariner-2.0-sqlite (expected.json)


def rootfs(tmp: Path, macros: str | None = None, macro_file: str = "usr/lib/rpm/macros") -> Path:
    fixtures = shared_fixtures() / "rpmdb"
    db = tmp / "root" / "var" / "lib" / "rpm"
    db.mkdir(parents=True)
    shutil.copy(fixtures / "cbl-mariner-2.0-sqlite" / "rpmdb.sqlite", db / "rpmdb.sqlite")
    shutil.copy(fixtures / "fedora32-hello-epoch-bdb" / "Packages_epoch", db / "Packages")
    if macros is not None:
        path = tmp / "root" / macro_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(macros)
    return tmp / "root"


def packages_cli(root: Path) -> tuple[dict[str, Any], str]:
    res = CliRunner().invoke(cli, ["packages", f"rootfs:{root}", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), res.stderr


def test_newest_format_wins_and_the_stale_one_is_named(tmp_path: Path) -> None:
    root = rootfs(tmp_path)
    doc, err = packages_cli(root)
    dbs = doc["databases"]
    assert [d["format"] for d in dbs] == ["rpm-sqlite"]
    names = {p["name"] for p in doc["packages"]}
    assert len(names) >= 100 and "hello" not in names
    lines = [ln for ln in err.splitlines() if "Packages" in ln]
    assert len(lines) == 1 and "/var/lib/rpm/Packages: rpm-bdb database ignored" in lines[0]
    assert "newest format present" in lines[0]


@pytest.mark.parametrize("macro_file", ["usr/lib/rpm/macros", "etc/rpm/macros.db"])
def test_db_backend_macro_decides(tmp_path: Path, macro_file: str) -> None:
    root = rootfs(tmp_path, "%_dbpath /var/lib/rpm\n%_db_backend bdb\n", macro_file)
    ownership = collect(read_rootfs(str(root)).tree)
    assert [db.format for db in ownership.dbs] == ["rpm-bdb"]
    assert {p.name for p in ownership.packages.values()} == {"hello"}
    (note,) = [w for w in ownership.warnings if "ignored" in w]
    assert note.startswith("/var/lib/rpm/rpmdb.sqlite: rpm-sqlite database ignored")
    assert f"%_db_backend in /{macro_file}" in note
    # the ignored file is still a package-database file (grouped with the databases)
    assert "var/lib/rpm/rpmdb.sqlite" in ownership.pkgdb_paths


def test_later_macro_files_override_earlier_ones(tmp_path: Path) -> None:
    root = rootfs(tmp_path, "%_db_backend bdb\n")
    (root / "etc" / "rpm").mkdir(parents=True)
    (root / "etc" / "rpm" / "macros").write_text("%_db_backend sqlite\n")
    ownership = collect(read_rootfs(str(root)).tree)
    assert [db.format for db in ownership.dbs] == ["rpm-sqlite"]
    assert len(ownership.packages) == MARINER


def test_one_format_alone_is_read_without_a_warning(tmp_path: Path) -> None:
    root = rootfs(tmp_path)
    (root / "var" / "lib" / "rpm" / "Packages").unlink()
    ownership = collect(read_rootfs(str(root)).tree)
    assert len(ownership.packages) == MARINER and ownership.warnings == ()
