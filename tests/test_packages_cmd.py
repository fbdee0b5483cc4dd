"""``pkgchunk packages``: the table, the JSON document, and bad package databases.

The root is made by the real dpkg from tiny .debs; expected counts come from
``dpkg-query -L`` and the host filesystem, not from pkgchunk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import debbuild


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", "packages", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("debs")
    r = debbuild.new_root(tmp_path_factory.mktemp("root"))
    (r / "usr/bin").mkdir(parents=True)
    (r / "bin").symlink_to("usr/bin")
    debs = [
        debbuild.build_deb(
            work,
            "tool",
            "2:1.5-1",
            arch=debbuild.native_arch(),
            files={"/bin/tool": b"t" * 3000, "/usr/share/doc/tool/copyright": b"c" * 100},
            fields={"Source": "toolsrc (1.5-1)"},
        ),
    ]
    native = debbuild.native_arch()
    foreign = "i386" if native != "i386" else "amd64"
    debbuild.dpkg(r, "--add-architecture", foreign)
    debs += [
        debbuild.build_deb(
            work,
            "libx",
            "0.1",
            arch=arch,
            files={
                f"/usr/lib/libx-{arch}.so": b"l" * 10,
                "/usr/share/doc/libx/copyright": b"c" * 100,
            },
            fields={"Multi-Arch": "same"},
        )
        for arch in (native, foreign)
    ]
    debbuild.install(r, *debs)
    for rel, size in (("opt/a", 1000), ("opt/b", 500), ("srv/big", 5000), ("etc/local", 7)):
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_bytes(b"x" * size)
    return r


def _real(root: Path, listed: str) -> str:
    head, _, name = listed.rpartition("/")
    return os.path.relpath(os.path.join(os.path.realpath(str(root) + head), name), root)


def _owned(root: Path) -> dict[str, set[str]]:
    """Package key -> owned tree paths: dpkg-query -L (where dpkg really put them) + info files."""
    admin = root / "var/lib/dpkg"
    owned: dict[str, set[str]] = {}
    for key, paths in debbuild.query_listed(admin).items():
        name = key.partition(":")[0]
        mine = {_real(root, p) for p in paths if p != "/." and os.path.lexists(str(root) + p)}
        mine |= {
            f"var/lib/dpkg/info/{n}"
            for n in os.listdir(admin / "info")
            if n.rpartition(".")[0] in (name, key)
        }
        owned[key] = mine
    return owned


def _sizes(root: Path) -> dict[str, int]:
    """Every path under root -> its size when it is a regular file, else 0."""
    sizes: dict[str, int] = {}
    for dirpath, dirs, names in os.walk(root):
        for n in [*dirs, *names]:
            full = os.path.join(dirpath, n)
            regular = os.path.isfile(full) and not os.path.islink(full)
            sizes[os.path.relpath(full, root)] = os.lstat(full).st_size if regular else 0
    return sizes


def _json(root: Path, *extra: str) -> dict[str, Any]:
    res = run(f"rootfs:{root}", "--json", *extra)
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_json_document(root: Path) -> None:
    doc = _json(root)
    assert set(doc) == {"databases", "packages", "unowned"}
    assert doc["databases"] == [{"format": "dpkg", "path": "/var/lib/dpkg/status"}]
    owned, sizes = _owned(root), _sizes(root)
    arch = debbuild.native_arch()
    rows = {f"{p['name']}:{p['arch']}": p for p in doc["packages"]}
    foreign = "i386" if arch != "i386" else "amd64"
    assert set(rows) == set(owned) == {f"tool:{arch}", f"libx:{arch}", f"libx:{foreign}"}
    for row in doc["packages"]:
        assert set(row) == {
            "name",
            "epoch",
            "version",
            "release",
            "arch",
            "source",
            "files",
            "bytes",
        }
    tool = rows[f"tool:{arch}"]
    assert (tool["epoch"], tool["version"], tool["release"], tool["source"]) == (
        2,
        "1.5-1",
        "",
        "toolsrc",
    )
    assert rows[f"libx:{arch}"]["epoch"] is None
    for key, row in rows.items():
        assert row["files"] == len(owned[key]), key
        assert row["bytes"] == sum(sizes[p] for p in owned[key]), key
    # the shared copyright (two owners) counts fully for each
    assert rows[f"libx:{arch}"]["bytes"] >= 110 and rows[f"libx:{foreign}"]["bytes"] >= 110
    all_owned = set().union(*owned.values())
    unowned = [
        p
        for p in sizes
        if p not in all_owned and not p.startswith("var/lib/dpkg/") and p != "var/lib/dpkg"
    ]
    assert doc["unowned"]["files"] == len(unowned)
    assert doc["unowned"]["bytes"] == sum(sizes[p] for p in unowned) == 6507
    top = doc["unowned"]["largest_dirs"]
    assert top[:3] == [
        {"path": "/srv", "bytes": 5000, "files": 1},
        {"path": "/opt", "bytes": 1500, "files": 2},
        {"path": "/etc", "bytes": 7, "files": 1},
    ]
    assert len(top) <= 10
    assert [r["name"] for r in doc["packages"]] == sorted(r["name"] for r in doc["packages"])


def test_json_is_deterministic(root: Path) -> None:
    a = run(f"rootfs:{root}", "--json")
    b = run(f"rootfs:{root}", "--json")
    assert a.returncode == 0 and a.stdout == b.stdout


def test_table(root: Path) -> None:
    res = run(f"rootfs:{root}")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "ARCH", "SOURCE", "FILES", "BYTES"]
    tool = next(line for line in lines if line.startswith("tool "))
    assert tool.split()[:4] == ["tool", "2:1.5-1", debbuild.native_arch(), "toolsrc"]
    assert "database: dpkg /var/lib/dpkg/status" in res.stdout
    assert "unowned:" in res.stdout and "/srv" in res.stdout


@pytest.fixture
def broken(tmp_path: Path, root: Path) -> Path:
    """A copy of the root whose status file is garbage."""
    dst = tmp_path / "broken"
    subprocess.run(["cp", "-a", str(root), str(dst)], check=True)
    (dst / "var/lib/dpkg/status").write_bytes(b"\x7fELF\x02\x01\x01\x00garbage\n" * 10)
    return dst


def test_garbage_status_exit_2_names_the_file(broken: Path) -> None:
    res = run(f"rootfs:{broken}", "--json")
    assert res.returncode == 2
    assert res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"pkgchunk: error: rootfs:{broken}: var/lib/dpkg/status: ")


def test_ignore_pkgdb_errors_leaves_files_unowned(broken: Path) -> None:
    res = run(f"rootfs:{broken}", "--json", "--ignore-pkgdb-errors")
    assert res.returncode == 0, res.stderr
    assert f"pkgchunk: warning: rootfs:{broken}: var/lib/dpkg/status: " in res.stderr
    doc = json.loads(res.stdout)
    assert doc["databases"] == [] and doc["packages"] == []
    sizes = _sizes(broken)
    # everything but the status file itself is unowned now (the info files included)
    assert doc["unowned"]["files"] == len(sizes) - 1
    assert doc["unowned"]["bytes"] == sum(sizes.values()) - os.path.getsize(
        broken / "var/lib/dpkg/status"
    )


def test_missing_source_is_exit_2(tmp_path: Path) -> None:
    res = run(f"rootfs:{tmp_path / 'nope'}")
    assert res.returncode == 2
    assert res.stderr.startswith("pkgchunk: error: ")
