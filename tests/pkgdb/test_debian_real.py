"""A real Debian 12 root made by mmdebstrap: ``pkgchunk packages`` against dpkg-query.

Slow (~1 min, downloads ~40 MB of .debs from the Debian mirror); nothing is cached.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pkgchunk.oci.rootfs import read_rootfs
from pkgchunk.pkgdb.ownership import collect
from tests import debbuild
from tests.helpers import require_tool

MIRROR = "http://deb.debian.org/debian"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("mmdebstrap")
    r = tmp_path_factory.mktemp("bookworm") / "root"
    res = subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(r), MIRROR],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def doc(root: Path) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", "packages", f"rootfs:{root}", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def _in_root(root: Path, listed: str) -> str | None:
    """Where dpkg put a listed path, via the host's view of the root (None when absent)."""
    head, _, name = listed.rpartition("/")
    real_parent = os.path.realpath(str(root) + head)
    if real_parent != str(root) and not real_parent.startswith(f"{root}/"):
        return None
    full = os.path.join(real_parent, name)
    return os.path.relpath(full, root) if os.path.lexists(full) else None


def _regular_sizes(root: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            full = os.path.join(dirpath, n)
            if os.path.isfile(full) and not os.path.islink(full):
                sizes[os.path.relpath(full, root)] = os.lstat(full).st_size
    return sizes


def test_package_list_is_dpkg_querys(root: Path, doc: dict[str, Any]) -> None:
    truth = debbuild.query_packages(root / "var/lib/dpkg")
    got = {
        (
            p["name"],
            (f"{p['epoch']}:" if p["epoch"] is not None else "") + p["version"],
            p["arch"],
            p["source"],
        )
        for p in doc["packages"]
    }
    assert got == truth
    assert len(got) > 80
    assert doc["databases"] == [{"format": "dpkg", "path": "/var/lib/dpkg/status"}]


def test_packages_own_the_bytes(root: Path, doc: dict[str, Any]) -> None:
    """Owned regular files (from dpkg-query -L, placed by the host's view of the root)
    match pkgchunk's, and they hold >= 97% of the bytes of all regular files."""
    admin = root / "var/lib/dpkg"
    sizes = _regular_sizes(root)
    truth: set[str] = set()
    for paths in debbuild.query_listed(admin).values():
        truth.update(p for p in (_in_root(root, lp) for lp in paths if lp != "/.") if p in sizes)
    own = collect(read_rootfs(str(root)).tree)
    mine = {p for p in own.owners if p in sizes}
    info = {p for p in mine if p.startswith("var/lib/dpkg/info/")}
    assert mine - info == truth
    total = sum(sizes.values())
    owned = sum(sizes[p] for p in mine)
    pkgdb = sum(sizes[p] for p in own.pkgdb_paths if p in sizes)
    assert doc["unowned"]["bytes"] == total - owned - pkgdb
    share = owned / total
    print(f"\nbookworm minbase: packages own {owned} of {total} regular-file bytes ({share:.2%})")
    assert share >= 0.97


def test_changelog_times_match_dpkg_parsechangelog(root: Path, tmp_path: Path) -> None:
    require_tool("dpkg-parsechangelog")
    own = collect(read_rootfs(str(root)).tree)
    by_name = {p.name: p for p in own.packages.values()}
    for name in ("bash", "libc6", "tzdata", "dpkg", "coreutils"):
        doc_dir = Path(os.path.realpath(root / "usr/share/doc" / name))
        src = next(
            doc_dir / n for n in ("changelog.Debian.gz", "changelog.gz") if (doc_dir / n).exists()
        )
        text = tmp_path / f"{name}.changelog"
        text.write_bytes(gzip.decompress(src.read_bytes()))
        out = subprocess.run(
            [
                "dpkg-parsechangelog",
                "-l",
                str(text),
                "--format",
                "rfc822",
                "--all",
                "-S",
                "Timestamp",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        truth = tuple(sorted((int(x) for x in out.split()), reverse=True))
        assert len(truth) > 3
        got = by_name[name].changelog_times
        # dpkg-parsechangelog stops at the first malformed heading (dpkg's own 1996
        # entries); pkgchunk keeps reading trailer lines, so it may have older extra ones.
        assert got[: len(truth)] == truth, name
