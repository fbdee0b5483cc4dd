"""Hostile package databases beyond single corrupt structures (test_rpmdb_corrupt.py,
test_dpkg.py cover those): small inputs that would expand into huge memory, floods of
paragraphs and file lists, links out of the tree, and damaged databases inside a real
image through ``pkgchunk packages``: one line, exit 2, or a warning when told to ignore.
"""

from __future__ import annotations

import sqlite3
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from pkgchunk.errors import PkgdbError
from pkgchunk.pkgdb import dpkg, rpm
from pkgchunk.pkgdb.model import MAX_DB_FILES, MAX_DB_PATH_BYTES
from pkgchunk.pkgdb.ownership import collect
from pkgchunk.pkgdb.rpmheader import parse_package
from pkgchunk.tree import FileTree
from tests import debbuild
from tests.hostile.crafted import cli_env, layout_of, one_error_line, run_cli, tree_files, within
from tests.imagebuild import directory, file, symlink
from tests.pkgdb.test_rpmdb_corrupt import BDB_DAMAGE, NDB_DAMAGE, good_header
from tests.rpmbuild import make_header, make_tree, write_bdb, write_ndb

MiB = 1 << 20


# --- rpm: shared directory names must not multiply into gigabytes -----------------------------


def amplifying_header(files: int, dirname_len: int) -> bytes:
    """Every file in one directory whose name is ``dirname_len`` bytes long."""
    return make_header([
        (1000, 6, "bomb"), (1116, 4, (0,) * files), (1117, 8, ["f"] * files),
        (1118, 8, ["/" + "d" * dirname_len + "/"]),
    ])


def test_header_whose_paths_would_fill_memory() -> None:
    """A 200 KiB header naming 20000 files in a 64 KiB-long directory: 1.3 GB of paths.
    Refused after counting, before building any of them."""
    blob = amplifying_header(20_000, 64 << 10)
    assert len(blob) < 200 << 10
    tracemalloc.start()
    try:
        with within(10), pytest.raises(PkgdbError, match="bytes of paths is too many"):
            parse_package(blob, "img: Packages: package 1", "rpm-bdb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB, peak


def test_database_whose_paths_add_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many headers, each fine alone, together over the database bound."""
    monkeypatch.setattr(rpm, "MAX_DB_PATH_BYTES", 4 * MiB)
    db = tmp_path / "rpmdb.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB)")
    blob = amplifying_header(1000, 1000)  # 1 MB of paths each
    conn.executemany("INSERT INTO Packages VALUES (?, ?)", [(i, blob) for i in range(1, 50)])
    conn.commit()
    conn.close()
    tree = make_tree(tmp_path / "img", {"var/lib/rpm/rpmdb.sqlite": db.read_bytes()})
    with pytest.raises(PkgdbError) as err:
        rpm.SqliteReader().read(tree, "var/lib/rpm/rpmdb.sqlite")
    assert str(err.value) == (
        f"{tree.label}: var/lib/rpm/rpmdb.sqlite: more than {MAX_DB_FILES} files or"
        f" {4 * MiB} bytes of file paths"
    )


def test_database_bounds() -> None:
    """The limits docs/security.md states."""
    limits = (MAX_DB_FILES, MAX_DB_PATH_BYTES, dpkg.MAX_PARAGRAPHS)
    assert limits == (5_000_000, 512 * MiB, 100_000)


# --- dpkg floods ------------------------------------------------------------------------------


def status_tree(tmp_path: Path, status: bytes, lists: dict[str, bytes] | None = None) -> FileTree:
    files = {"var/lib/dpkg/status": status}
    files.update({f"var/lib/dpkg/info/{k}.list": v for k, v in (lists or {}).items()})
    host = {}
    for rel, data in files.items():
        p = tmp_path / "host" / rel.replace("/", "_")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        host[rel] = p
    return debbuild.hand_tree(host, dirs=["var/lib/dpkg/info"])


def read_dpkg(tree: FileTree) -> list[str]:
    reader = dpkg.DpkgReader()
    (path,) = reader.detect(tree)
    return sorted(p.key for p in reader.read(tree, path).packages)


@pytest.mark.filterwarnings("ignore::pkgchunk.errors.PkgdbWarning")
def test_paragraph_flood(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'Package: p' repeated: 12 bytes a paragraph, ~2 KiB of memory each once parsed."""
    monkeypatch.setattr(dpkg, "MAX_PARAGRAPHS", 1000)
    ok = b"Package: p\n\n" * 1000
    assert read_dpkg(status_tree(tmp_path / "a", ok)) == ["p"]  # one package, many times
    with within(10), pytest.raises(PkgdbError) as err:
        read_dpkg(status_tree(tmp_path / "b", ok + b"Package: q\n\n"))
    assert str(err.value) == "hand: var/lib/dpkg/status: more than 1000 paragraphs"


def test_list_flood(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpkg, "MAX_DB_FILES", 1000)
    status = b"".join(b"Package: p%d\nStatus: install ok installed\n\n" % i for i in range(3))
    lists = {f"p{i}": b"/a\n" * 400 for i in range(3)}
    with pytest.raises(PkgdbError) as err:
        read_dpkg(status_tree(tmp_path, status, lists))
    assert str(err.value).startswith("hand: var/lib/dpkg/info: the .list files name more than")


def test_list_with_absurd_paths_maps_fast(tmp_path: Path) -> None:
    """A .list naming a 1 MiB path of 'a/' and one through 4000 levels of '..': both are
    resolved in bounded time (longer than PATH_MAX: not in the tree) and own nothing."""
    status = b"Package: p\nStatus: install ok installed\n\n"
    lists = {"p": b"/" + b"a/" * (1 << 19) + b"x\n/" + b"../" * 4000 + b"var/lib/dpkg/status\n"}
    tree = status_tree(tmp_path, status, lists)
    with within(10):
        own = collect(tree)
    assert own.packages["p"].files[0].path.endswith("/x")
    assert "var/lib/dpkg/status" in own.pkgdb_paths
    assert not own.owners.get("var/lib/dpkg/status")


@pytest.mark.filterwarnings("ignore::pkgchunk.errors.PkgdbWarning")
@pytest.mark.parametrize(
    ("status", "result"),
    [
        (b"Package: a\nPackage: b\nStatus: install ok installed\n", "PkgdbError"),
        (b"Package: a\r\nStatus: install ok installed\r\n\r\n", ["a"]),
        (b"Package: a\rStatus: install ok installed\r\r", "PkgdbError"),
        (b"Package: a\n" + b"Description: " + b"x" * (8 * MiB) + b"\n", ["a"]),
        (b"Package: a\n" + b" continued\n" * 100_000, "PkgdbError"),
        (b"Package: \xc3\xa9\nStatus: install ok installed\n", "PkgdbError"),
        (b"P\xc3\xa4ckage: a\n", "PkgdbError"),
        (b"Package: a\nStatus: install ok installed\nInstalled-Size: 99999999999999999999\n",
         ["a"]),
        (b"Package: a\nStatus: install ok installed\nInstalled-Size: -5\n", ["a"]),
        (b"Package: a\nStatus: install\n", []),
        (b"Package: a/../../etc\nStatus: install ok installed\n", "PkgdbError"),
        (b"Package: a\nStatus: install ok installed\n\nPackage: ../b\n", ["a"]),
        (b"\n" * 100_000, []),
        (b"Package: a\n\x0c\nPackage: b\n", ["a", "b"]),
    ],
    ids=["two names", "crlf", "cr only", "8 MiB line", "100k continuations", "utf-8 name",
         "non-ascii field", "huge size", "negative size", "short status", "path-like name",
         "one bad name", "only newlines", "form feed"],
)
def test_malformed_stanzas(tmp_path: Path, status: bytes, result: object) -> None:
    """Each: one PkgdbError line naming the file, or a sensible database."""
    tree = status_tree(tmp_path, status)
    with within(20):
        if result == "PkgdbError":
            with pytest.raises(PkgdbError) as err:
                read_dpkg(tree)
            assert str(err.value).startswith("hand: var/lib/dpkg/status: ")
            assert "\n" not in str(err.value)
        else:
            assert read_dpkg(tree) == result


def test_status_link_loops_and_escapes(tmp_path: Path) -> None:
    """status a link to itself or out of the tree; info a link to /etc: a clear error or
    nothing read, never the host's files."""
    loop = FileTree(label="hand")
    debbuild_tree = debbuild.hand_tree({}, dirs=["var/lib/dpkg"], symlinks={
        "var/lib/dpkg/status": "status", "var/lib/dpkg/info": "/etc"})
    loop.entries.update(debbuild_tree.entries)
    with pytest.raises(PkgdbError, match=r"^hand: var/lib/dpkg/status: not a regular file$"):
        read_dpkg(loop)
    out = debbuild.hand_tree({}, symlinks={"var": "/var"})
    assert collect(out).packages == {}


# --- damaged databases inside an image, through the CLI ----------------------------------------


@pytest.fixture(scope="module")
def good_dbs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    work = tmp_path_factory.mktemp("dbs")
    write_bdb(work / "Packages", [(i, good_header(pad=1500)) for i in (1, 2, 3)],
              config=["db_pagesize=512"])
    write_ndb(work / "Packages.db", [(i, good_header(pad=100 * i)) for i in (1, 2, 3)])
    return {"bdb": (work / "Packages").read_bytes(), "ndb": (work / "Packages.db").read_bytes()}


DB_PATH = {"bdb": "var/lib/rpm/Packages", "ndb": "usr/lib/sysimage/rpm/Packages.db"}
CASES: dict[str, tuple[str, Callable[[bytearray], None]]] = {
    "bdb overflow chain loop": ("bdb", BDB_DAMAGE["overflow chain loop"][0]),
    "bdb page past EOF": ("bdb", BDB_DAMAGE["overflow page past EOF"][0]),
    "ndb slot pointing past EOF": ("ndb", NDB_DAMAGE["blob past EOF"][0]),
    "ndb slot pointing into the slot pages": ("ndb", NDB_DAMAGE["blob inside slot pages"][0]),
    "ndb overlapping slots": ("ndb", NDB_DAMAGE["overlapping blobs"][0]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_rpmdb_in_an_image(
    tmp_path: Path, good_dbs: dict[str, bytes], case: str
) -> None:
    kind, damage = CASES[case]
    data = bytearray(good_dbs[kind])
    damage(data)
    path = DB_PATH[kind]
    src = layout_of(tmp_path / "src", [
        directory(path.rpartition("/")[0]), file(path, bytes(data)), file("usr/bin/x", b"x"),
        symlink("bin", "usr/bin"),
    ])
    env = cli_env(tmp_path)
    res = run_cli(["packages", src], env, timeout=30)
    msg = one_error_line(res.returncode, res.stderr, f"{src}: {path}: ")
    assert len(msg) < 300
    res = run_cli(["packages", src, "--json", "--ignore-pkgdb-errors"], env, timeout=30)
    assert res.returncode == 0, res.stderr
    assert f"pkgchunk: warning: {src}: {path}: " in res.stderr and "Traceback" not in res.stderr
    dest = f"oci:{tmp_path}/out:v1"
    res = run_cli(["rechunk", src, dest], env, timeout=60)
    one_error_line(res.returncode, res.stderr, f"{src}: {path}: ")
    assert not (tmp_path / "out").exists()
    res = run_cli(["rechunk", src, dest, "--ignore-pkgdb-errors"], env, timeout=60)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    res = run_cli(["verify", src, dest], env)
    assert res.returncode == 0 and res.stdout.startswith("identical: "), res.stdout + res.stderr
    assert tree_files(tmp_path / "tmpdir") == []


def test_rpm_header_counts_past_the_end_in_an_image(tmp_path: Path) -> None:
    """A sqlite rpmdb whose second header claims 2**31 index entries: one line naming the
    database and the package."""
    db = tmp_path / "rpmdb.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB)")
    bad = b"\x7f\xff\xff\xff" + good_header()[4:]
    conn.executemany("INSERT INTO Packages VALUES (?, ?)", [(1, good_header()), (2, bad)])
    conn.commit()
    conn.close()
    src = layout_of(tmp_path / "src", [file("var/lib/rpm/rpmdb.sqlite", db.read_bytes())])
    res = run_cli(["packages", src], cli_env(tmp_path))
    one_error_line(res.returncode, res.stderr, f"{src}: var/lib/rpm/rpmdb.sqlite: package 2: ")
