"""Hostile rpm databases: every damage ends in one PkgdbError line naming the file.

Loops cannot happen by construction (visited sets, counts checked against the bytes
present), so these tests only check that the damage is detected and reported well.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pkgchunk.errors import PkgdbError
from pkgchunk.pkgdb import bdb, ndb
from pkgchunk.pkgdb.model import PackageDbReader
from pkgchunk.pkgdb.rpm import READERS
from pkgchunk.pkgdb.rpmheader import parse_package
from pkgchunk.tree import FileTree
from tests.rpmbuild import make_header, make_tree, write_bdb, write_ndb

WHERE = "img: var/lib/rpm/Packages: package 5"


def good_header(nfiles: int = 3, pad: int = 0) -> bytes:
    """A plausible header with a file list; ``pad`` bytes of description make it big."""
    return make_header(
        [
            (1000, 6, "hello"),
            (1001, 6, "1.0"),
            (1002, 6, "1"),
            (1005, 9, ["x" * pad]),
            (1009, 4, (10,)),
            (1022, 6, "x86_64"),
            (1028, 4, tuple(range(nfiles))),
            (1030, 3, (0o100644,) * nfiles),
            (1035, 8, ["ab"] * nfiles),
            (1037, 4, (0,) * nfiles),
            (1044, 6, "hello-1.0-1.src.rpm"),
            (1080, 4, (3, 2, 1)),
            (1116, 4, (0,) * nfiles),
            (1117, 8, [f"f{i}" for i in range(nfiles)]),
            (1118, 8, ["/usr/"]),
        ]
    )


def patch_entry(blob: bytes, i: int, **fields: int) -> bytes:
    """Change index entry ``i`` (0 is the region tag) of a header blob."""
    out = bytearray(blob)
    off = 8 + 16 * i
    tag, typ, offset, count = struct.unpack_from(">iIii", out, off)
    vals = {"tag": tag, "type": typ, "offset": offset, "count": count, **fields}
    struct.pack_into(">iIii", out, off, vals["tag"], vals["type"], vals["offset"], vals["count"])
    return bytes(out)


def entry_of(blob: bytes, tag: int) -> int:
    (il,) = struct.unpack_from(">i", blob, 0)
    for i in range(il):
        if struct.unpack_from(">i", blob, 8 + 16 * i)[0] == tag:
            return i
    raise AssertionError(tag)


def _blob_cases() -> dict[str, Callable[[], bytes]]:
    g = good_header
    return {
        "too short": lambda: b"\0\0\0",
        "huge index count": lambda: struct.pack(">ii", 0x7FFFFFFF, 0) + b"\0" * 64,
        "index count above 64k": lambda: struct.pack(">ii", 0x10000, 0) + b"\0" * 64,
        "negative index count": lambda: struct.pack(">ii", -1, 0) + b"\0" * 64,
        "negative data length": lambda: struct.pack(">ii", 1, -5) + b"\0" * 64,
        "data length past blob": lambda: g()[:4] + struct.pack(">i", len(g())) + g()[8:],
        "truncated blob": lambda: g()[:-1],
        "negative offset": lambda: patch_entry(g(), entry_of(g(), 1000), offset=-4),
        "offset past data": lambda: patch_entry(g(), entry_of(g(), 1000), offset=1 << 30),
        "huge int count": lambda: patch_entry(g(), entry_of(g(), 1009), count=0x7FFFFFFF),
        "huge string array count": lambda: patch_entry(g(), entry_of(g(), 1117), count=1 << 30),
        "negative count": lambda: patch_entry(g(), entry_of(g(), 1028), count=-1),
        "unknown type": lambda: patch_entry(g(), entry_of(g(), 1022), type=42),
        "name is an integer": lambda: patch_entry(g(), entry_of(g(), 1000), type=4),
        "sizes are strings": lambda: patch_entry(g(), entry_of(g(), 1028), type=8),
        "unterminated string": lambda: g()[:-1] + b"x",
        "dirindex out of range": lambda: make_header(
            [(1000, 6, "a"), (1116, 4, (0, 3)), (1117, 8, ["x", "y"]), (1118, 8, ["/"])]
        ),
        "dirindexes count mismatch": lambda: make_header(
            [(1000, 6, "a"), (1116, 4, (0,)), (1117, 8, ["x", "y"]), (1118, 8, ["/"])]
        ),
        "filesizes count mismatch": lambda: make_header(
            [(1000, 6, "a"), (1027, 8, ["/x", "/y"]), (1028, 4, (1,))]
        ),
        "digests count mismatch": lambda: make_header(
            [(1000, 6, "a"), (1027, 8, ["/x", "/y"]), (1035, 8, ["ab"])]
        ),
        "region entry wrong count": lambda: patch_entry(g(), 0, count=8),
        "region trailer past data": lambda: patch_entry(g(), 0, offset=len(g())),
        "region trailer wrong tag": lambda: _patch_trailer(g(), tag=62),
        "region larger than index": lambda: _patch_trailer(g(), offset=-16 * 1000),
        "region size not whole entries": lambda: _patch_trailer(g(), offset=-20),
        "no name": lambda: make_header([(1001, 6, "1.0")]),
        "bin past data": lambda: patch_entry(g(), entry_of(g(), 1005), type=7, count=1 << 20),
    }


def _patch_trailer(blob: bytes, **fields: int) -> bytes:
    (il,) = struct.unpack_from(">i", blob, 0)
    (off,) = struct.unpack_from(">i", blob, 8 + 8)
    pos = 8 + 16 * il + off
    tag, typ, offset, count = struct.unpack_from(">iIii", blob, pos)
    vals = {"tag": tag, "offset": offset, **fields}
    out = bytearray(blob)
    struct.pack_into(">iIii", out, pos, vals["tag"], typ, vals["offset"], count)
    return bytes(out)


BLOB_CASES = _blob_cases()


def test_good_header_parses() -> None:
    p = parse_package(good_header(), WHERE, "rpm-bdb")
    assert [f.path for f in p.files] == ["/usr/f0", "/usr/f1", "/usr/f2"]


@pytest.mark.parametrize("case", sorted(BLOB_CASES))
def test_hostile_header(case: str) -> None:
    with pytest.raises(PkgdbError) as err:
        parse_package(BLOB_CASES[case](), WHERE, "rpm-bdb")
    msg = str(err.value)
    assert msg.startswith(WHERE + ": ") and "\n" not in msg


def test_every_truncation_of_a_header_is_reported() -> None:
    blob = good_header()
    for n in range(len(blob)):
        with pytest.raises(PkgdbError):
            parse_package(blob[:n], WHERE, "rpm-bdb")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzzed_header_never_escapes(edits: list[tuple[int, int]]) -> None:
    blob = bytearray(good_header())
    for pos, val in edits:
        blob[pos % len(blob)] = val
    try:
        parse_package(bytes(blob), WHERE, "rpm-bdb")
    except PkgdbError as e:
        assert str(e).startswith(WHERE)


# -- every reader: garbage at its location ---------------------------------------------------

NAMES = ("rpmdb.sqlite", "Packages", "Packages.db")


def _only(tree: FileTree, reader: PackageDbReader) -> str:
    (path,) = reader.detect(tree)
    return path


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.format)
@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 100, bytes(range(256)) * 64, b"RpmP" + b"\xff" * 8188],
    ids=["empty", "zeros", "garbage", "magic-then-garbage"],
)
def test_garbage_db_is_reported(reader: PackageDbReader, content: bytes, tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {f"usr/lib/sysimage/rpm/{n}": content for n in NAMES})
    path = _only(tree, reader)
    with pytest.raises(PkgdbError) as err:
        reader.read(tree, path)
    assert str(err.value).startswith(f"{tree.label}: {path}: ")
    assert "\n" not in str(err.value)


# -- sqlite ----------------------------------------------------------------------------------


def _sqlite_db(path: Path, rows: list[tuple[object, object]]) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB)")
    conn.executemany("INSERT INTO Packages VALUES (?, ?)", rows)
    conn.commit()
    conn.close()
    return path.read_bytes()


def _read_sqlite(tmp_path: Path, data: bytes) -> None:
    tree = make_tree(tmp_path / "img", {"var/lib/rpm/rpmdb.sqlite": data})
    (reader,) = [r for r in READERS if r.format == "rpm-sqlite"]
    reader.read(tree, "var/lib/rpm/rpmdb.sqlite")


def test_sqlite_good_control(tmp_path: Path) -> None:
    data = _sqlite_db(tmp_path / "x.db", [(i, good_header(pad=3000)) for i in range(1, 40)])
    _read_sqlite(tmp_path, data)


def test_sqlite_truncated(tmp_path: Path) -> None:
    data = _sqlite_db(tmp_path / "x.db", [(i, good_header(pad=3000)) for i in range(1, 40)])
    with pytest.raises(PkgdbError, match=r"var/lib/rpm/rpmdb.sqlite: "):
        _read_sqlite(tmp_path, data[: len(data) // 2])


def test_sqlite_without_packages_table(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("CREATE TABLE Other (x)")
    conn.commit()
    conn.close()
    with pytest.raises(PkgdbError, match="no such table"):
        _read_sqlite(tmp_path, (tmp_path / "x.db").read_bytes())


def test_sqlite_row_of_wrong_types(tmp_path: Path) -> None:
    data = _sqlite_db(tmp_path / "x.db", [(1, "text, not a blob")])
    with pytest.raises(PkgdbError, match="package 1: row is not"):
        _read_sqlite(tmp_path, data)


def test_sqlite_bad_blob_names_the_package(tmp_path: Path) -> None:
    data = _sqlite_db(tmp_path / "x.db", [(1, good_header()), (7, good_header()[:-3])])
    with pytest.raises(PkgdbError, match=r"rpmdb.sqlite: package 7: "):
        _read_sqlite(tmp_path, data)


# -- Berkeley DB ------------------------------------------------------------------------------

PS = 512


@pytest.fixture(scope="module")
def bdb_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real libdb hash file, 512-byte pages, each header spread over an overflow chain."""
    dest = tmp_path_factory.mktemp("bdb") / "Packages"
    write_bdb(dest, [(i, good_header(pad=1500)) for i in (1, 2, 3)], config=["db_pagesize=512"])
    return dest.read_bytes()


def _read_bdb(data: bytes) -> list[str]:
    db = bdb.HashDb(io.BytesIO(data), len(data), "img: Packages")
    names = []
    for key, blob in db.items():
        if key != b"\0\0\0\0":
            names.append(parse_package(blob, "img: Packages: package", "rpm-bdb").name)
    return names


def _pages_of_type(data: bytes | bytearray, ptype: int) -> list[int]:
    return [n for n in range(1, len(data) // PS) if data[n * PS + 25] == ptype]


def _chain_head(data: bytes | bytearray) -> int:
    return next(
        n
        for n in _pages_of_type(data, bdb.P_OVERFLOW)
        if data[n * PS + 12 : n * PS + 16] == b"\0" * 4
    )


def _put32(data: bytearray, off: int, v: int) -> None:
    struct.pack_into("<I", data, off, v)


def _chain(data: bytes | bytearray, head: int) -> list[int]:
    out = [head]
    while nxt := struct.unpack_from("<I", data, out[-1] * PS + 16)[0]:
        out.append(nxt)
    return out


def test_bdb_good_control(bdb_bytes: bytes) -> None:
    assert _read_bdb(bdb_bytes) == ["hello"] * 3
    assert len(_chain(bdb_bytes, _chain_head(bdb_bytes))) >= 3


def _bdb_damage() -> dict[str, tuple[Callable[[bytearray], None], str]]:
    def loop(d: bytearray) -> None:
        chain = _chain(d, _chain_head(d))
        _put32(d, chain[-1] * PS + 16, chain[0])

    def self_loop(d: bytearray) -> None:
        head = _chain_head(d)
        _put32(d, head * PS + 16, head)

    def past_eof(d: bytearray) -> None:
        _put32(d, _chain_head(d) * PS + 16, 10**6)

    def chain_wrong_type(d: bytearray) -> None:
        d[_chain(d, _chain_head(d))[1] * PS + 25] = 5

    def overflow_len(d: bytearray) -> None:
        struct.pack_into("<H", d, _chain_head(d) * PS + 22, 0xFFFF)

    def item_bounds(d: bytearray) -> None:
        page = _pages_of_type(d, bdb.P_HASH)[0]
        struct.pack_into("<H", d, page * PS + 26, 0xFFFF)

    def odd_entries(d: bytearray) -> None:
        page = next(p for p in _pages_of_type(d, bdb.P_HASH) if d[p * PS + 20])
        struct.pack_into("<H", d, page * PS + 20, 3)

    def wrong_pgno(d: bytearray) -> None:
        page = _pages_of_type(d, bdb.P_HASH)[0]
        _put32(d, page * PS + 8, 999)

    def meta(off: int, fmt: str, v: int) -> Callable[[bytearray], None]:
        return lambda d: struct.pack_into(fmt, d, off, v)

    return {
        "overflow chain loop": (loop, "linked twice"),
        "overflow page links to itself": (self_loop, "linked twice"),
        "overflow page past EOF": (past_eof, "past the end"),
        "overflow chain hits a non-overflow page": (chain_wrong_type, "in an overflow chain"),
        "overflow length past page": (overflow_len, "out of bounds"),
        "item offset past page": (item_bounds, "bad bounds"),
        "odd item count": (odd_entries, "odd number"),
        "page number mismatch": (wrong_pgno, "header says"),
        "bad magic": (meta(12, "<I", 0x12345678), "no Berkeley DB hash magic"),
        "btree magic": (meta(12, "<I", bdb.BTREE_MAGIC), "btree"),
        "bad page size": (meta(20, "<I", 1000), "bad page size"),
        "encrypted": (meta(24, "B", 1), "encrypted"),
        "meta page type": (meta(25, "B", 9), "meta page has type"),
        "last page past EOF": (meta(32, "<I", 10**6), "truncated"),
    }


BDB_DAMAGE = _bdb_damage()


@pytest.mark.parametrize("case", sorted(BDB_DAMAGE))
def test_bdb_damage(case: str, bdb_bytes: bytes, tmp_path: Path) -> None:
    damage, message = BDB_DAMAGE[case]
    data = bytearray(bdb_bytes)
    damage(data)
    tree = make_tree(tmp_path, {"var/lib/rpm/Packages": bytes(data)})
    (reader,) = [r for r in READERS if r.format == "rpm-bdb"]
    with pytest.raises(PkgdbError, match=message) as err:
        reader.read(tree, "var/lib/rpm/Packages")
    assert str(err.value).startswith(f"{tree.label}: var/lib/rpm/Packages: ")


def test_bdb_truncated_file(bdb_bytes: bytes) -> None:
    with pytest.raises(PkgdbError, match="truncated"):
        _read_bdb(bdb_bytes[:-PS])
    with pytest.raises(PkgdbError, match="multiple of the page size"):
        _read_bdb(bdb_bytes[:-100])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=6)
)
def test_fuzzed_bdb_never_escapes(bdb_bytes: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(bdb_bytes)
    for pos, val in edits:
        data[pos % len(data)] = val
    with contextlib.suppress(PkgdbError):
        _read_bdb(bytes(data))


# -- ndb -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ndb_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    dest = tmp_path_factory.mktemp("ndb") / "Packages.db"
    write_ndb(dest, [(i, good_header(pad=100 * i)) for i in (1, 2, 3)])
    return dest.read_bytes()


def _read_ndb(data: bytes) -> list[int]:
    f = io.BytesIO(data)
    return [idx for idx, blob in ndb.iter_blobs(f, len(data), "img: Packages.db")]


def _slot(i: int) -> int:
    """Offset of the slot of the i-th package write_ndb placed (a free slot between each)."""
    return (2 + 2 * i) * 16


def _ndb_damage() -> dict[str, tuple[Callable[[bytearray], None], str]]:
    def slot_field(i: int, field: int, v: int) -> Callable[[bytearray], None]:
        return lambda d: _put32(d, _slot(i) + 4 * field, v)

    def blob_of(d: bytearray, i: int) -> int:
        return int(struct.unpack_from("<I", d, _slot(i) + 8)[0]) * 16

    def blob_field(i: int, field: int, v: int) -> Callable[[bytearray], None]:
        return lambda d: _put32(d, blob_of(d, i) + 4 * field, v)

    def flip_blob_byte(d: bytearray) -> None:
        d[blob_of(d, 1) + 40] ^= 0xFF

    def overlap(d: bytearray) -> None:
        _put32(d, _slot(2) + 8, struct.unpack_from("<I", d, _slot(1) + 8)[0] + 1)

    def tail_magic(d: bytearray) -> None:
        off = blob_of(d, 0)
        cnt = struct.unpack_from("<I", d, _slot(0) + 12)[0]
        d[off + cnt * 16 - 1] ^= 0xFF

    return {
        "not RpmP": (lambda d: d.__setitem__(slice(0, 4), b"XXXX"), "no 'RpmP' magic"),
        "version": (lambda d: _put32(d, 4, 1), "unsupported ndb version"),
        "slot pages past EOF": (lambda d: _put32(d, 12, 0xFFFFFFFF), "slot pages do not fit"),
        "no slot pages": (lambda d: _put32(d, 12, 0), "slot pages do not fit"),
        "bad slot magic": (
            lambda d: d.__setitem__(slice(_slot(1), _slot(1) + 4), b"Tols"),
            "bad magic",
        ),
        "blob past EOF": (slot_field(1, 2, 0xFFFFFF), "out of bounds"),
        "blob count past EOF": (slot_field(1, 3, 0xFFFFFFF), "out of bounds"),
        "blob inside slot pages": (slot_field(1, 2, 0), "out of bounds"),
        "blob too small": (slot_field(1, 3, 1), "out of bounds"),
        "overlapping blobs": (overlap, "overlaps"),
        "duplicate package index": (slot_field(2, 1, 1), "appears twice"),
        "bad blob magic": (blob_field(1, 0, 0x41414141), "bad blob magic"),
        "blob of another package": (blob_field(1, 1, 9), "belongs to package 9"),
        "blob length past record": (blob_field(1, 3, 1 << 30), "exceeds its"),
        "bad tail": (tail_magic, "bad blob tail"),
        "checksum": (flip_blob_byte, "checksum mismatch"),
    }


NDB_DAMAGE = _ndb_damage()


def test_ndb_good_control(ndb_bytes: bytes) -> None:
    assert _read_ndb(ndb_bytes) == [1, 2, 3]


@pytest.mark.parametrize("case", sorted(NDB_DAMAGE))
def test_ndb_damage(case: str, ndb_bytes: bytes, tmp_path: Path) -> None:
    damage, message = NDB_DAMAGE[case]
    data = bytearray(ndb_bytes)
    damage(data)
    tree = make_tree(tmp_path, {"usr/lib/sysimage/rpm/Packages.db": bytes(data)})
    (reader,) = [r for r in READERS if r.format == "rpm-ndb"]
    with pytest.raises(PkgdbError, match=message) as err:
        reader.read(tree, "usr/lib/sysimage/rpm/Packages.db")
    assert str(err.value).startswith(f"{tree.label}: usr/lib/sysimage/rpm/Packages.db: ")


def test_ndb_truncated(ndb_bytes: bytes) -> None:
    with pytest.raises(PkgdbError, match="out of bounds"):
        _read_ndb(ndb_bytes[:-100])
    with pytest.raises(PkgdbError, match="too short"):
        _read_ndb(ndb_bytes[:20])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=6)
)
def test_fuzzed_ndb_never_escapes(ndb_bytes: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(ndb_bytes)
    for pos, val in edits:
        data[pos % len(data)] = val
    with contextlib.suppress(PkgdbError):
        for _, blob in ndb.iter_blobs(io.BytesIO(data), len(data), "x"):
            parse_package(blob, "x", "rpm-ndb")
