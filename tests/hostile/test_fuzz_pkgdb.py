"""Fuzzing the package database readers with *generated structures* (the byte-flip fuzzing
of good rpm headers, BDB and ndb files is in test_rpmdb_corrupt.py, of dpkg status in
test_dpkg.py): rpm header indexes pointing anywhere, ndb slot tables, BDB page graphs,
dpkg file lists, diversions and status.d directories, changelogs. The only failure allowed
is a PkgdbError naming the file; what is accepted is checked against how it was built.
"""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pkgchunk.errors import PkgdbError
from pkgchunk.pkgdb import bdb, dpkg, ndb
from pkgchunk.pkgdb.changelog import package_times, parse_times
from pkgchunk.pkgdb.rpmheader import parse_package
from pkgchunk.tree import FileTree
from tests import debbuild
from tests.hostile.crafted import fuzz_settings, within
from tests.pkgdb.test_rpmdb_corrupt import good_header
from tests.rpmbuild import make_header, write_bdb, write_ndb

WHERE = "img: Packages: package 1"
TAGS = [61, 62, 63, 1000, 1001, 1002, 1003, 1009, 1022, 1027, 1028, 1030, 1035, 1037, 1044,
        1080, 1116, 1117, 1118, 5008, 5009]

# --- rpm headers ---------------------------------------------------------------------------


@st.composite
def raw_headers(draw: st.DrawFn) -> bytes:
    """An index of entries with any tag, type, offset and count over arbitrary data."""
    data = draw(st.binary(max_size=300) | st.lists(
        st.sampled_from([b"\0", b"name\0", b"/usr/\0", b"\x00\x00\x00\x05", b"\xff" * 8]),
        max_size=40).map(b"".join))
    n = draw(st.integers(1, 12))
    index = b""
    for _ in range(n):
        index += struct.pack(
            ">iIii",
            draw(st.sampled_from(TAGS) | st.integers(-(2**31), 2**31 - 1)),
            draw(st.integers(0, 10) | st.integers(0, 2**32 - 1)),
            draw(st.integers(-16, len(data) + 16) | st.integers(-(2**31), 2**31 - 1)),
            draw(st.integers(-2, 40) | st.integers(-(2**31), 2**31 - 1)),
        )
    il = draw(st.sampled_from([n, n, n + 1, 0, -1, 2**31 - 1]))
    dl = draw(st.sampled_from([len(data), len(data), len(data) + 1, -1, 2**31 - 1]))
    return struct.pack(">ii", il, dl) + index + data


@fuzz_settings(300)
@given(raw_headers())
def test_generated_header_index(blob: bytes) -> None:
    try:
        parse_package(blob, WHERE, "rpm-bdb")
    except PkgdbError as err:
        assert str(err).startswith(WHERE + ": ") and "\n" not in str(err)


@fuzz_settings(150)
@given(
    st.lists(st.text("abc/é-", min_size=1, max_size=6).map(lambda s: "/" + s + "/"),
             min_size=1, max_size=4),
    st.lists(st.tuples(st.text("xyz.", min_size=1, max_size=5), st.integers(0, 3),
                       st.integers(0, 2**40)), max_size=12),
)
def test_generated_file_lists_read_back(dirs: list[str], files: list[tuple[str, int, int]]) -> None:
    """Headers made by rpmbuild.make_header from random file lists: every file comes back
    as dirname + basename with its size; a dirindex past the dirnames is refused."""
    entries: list[tuple[int, int, object]] = [(1000, 6, "p")]
    if files:
        entries += [
            (1116, 4, tuple(di for _, di, _ in files)),
            (1117, 8, [b for b, _, _ in files]),
            (1118, 8, dirs),
            (5008, 5, tuple(size for _, _, size in files)),
        ]
    blob = make_header(entries)
    if any(di >= len(dirs) for _, di, _ in files):
        with pytest.raises(PkgdbError, match="dirindex"):
            parse_package(blob, WHERE, "rpm-sqlite")
        return
    pkg = parse_package(blob, WHERE, "rpm-sqlite")
    assert [(f.path, f.size) for f in pkg.files] == [(dirs[di] + b, s) for b, di, s in files]


# --- ndb -----------------------------------------------------------------------------------


@fuzz_settings(150)
@given(st.lists(st.tuples(st.integers(1, 2**32 - 2), st.binary(max_size=200)), max_size=6,
                unique_by=lambda t: t[0]))
def test_ndb_written_blobs_read_back(blobs: list[tuple[int, bytes]]) -> None:
    """Whatever blobs rpmbuild.write_ndb lays out, iter_blobs gives exactly those back."""
    assume(blobs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Packages.db"
        write_ndb(path, blobs)
        data = path.read_bytes()
    got = list(ndb.iter_blobs(io.BytesIO(data), len(data), "x"))
    assert got == sorted(blobs)


@st.composite
def slot_tables(draw: st.DrawFn) -> bytes:
    """A slot page whose slots point anywhere, over records that are partly well formed."""
    npages = draw(st.sampled_from([1, 1, 2, 0, 2**20]))
    table = bytearray(4096)
    struct.pack_into("<4sIIII", table, 0, b"RpmP", 0, 1, npages, 9)
    body = bytearray()
    for i in range(2, 256):
        struct.pack_into("<4sIII", table, i * 16, b"Slot", 0, 0, 0)
    for n in range(draw(st.integers(0, 6))):
        blob = draw(st.binary(max_size=64))
        idx = draw(st.integers(0, 5))
        record = bytearray(struct.pack("<4sIII", b"BlbS", idx, 1, len(blob)) + blob)
        record += b"\0" * (-(len(record) + 12) % 16)
        record += struct.pack("<II4s", zlib.adler32(record), len(blob), b"BlbE")
        if draw(st.booleans()):
            record[draw(st.integers(0, len(record) - 1))] ^= 0xFF
        blkoff = (4096 + len(body)) // 16
        blkoff = draw(st.sampled_from([blkoff, blkoff, 0, blkoff + 1, 2**32 - 1]))
        blkcnt = draw(st.sampled_from([len(record) // 16, len(record) // 16, 0, 1, 2**32 - 1]))
        struct.pack_into("<4sIII", table, (2 + n) * 16, draw(st.sampled_from([b"Slot", b"Tols"])),
                         idx, blkoff, blkcnt)
        body += record
    return bytes(table) + bytes(body)


@fuzz_settings(300)
@given(slot_tables())
def test_ndb_slots_pointing_anywhere(data: bytes) -> None:
    try:
        with within(10):
            for idx, _ in ndb.iter_blobs(io.BytesIO(data), len(data), "img: Packages.db"):
                assert idx > 0
    except PkgdbError as err:
        assert str(err).startswith("img: Packages.db: ")


# --- Berkeley DB ----------------------------------------------------------------------------

PS = 512


@pytest.fixture(scope="module")
def bdb_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    dest = tmp_path_factory.mktemp("bdb") / "Packages"
    write_bdb(dest, [(i, good_header(pad=700 * i)) for i in range(1, 6)],
              config=["db_pagesize=512"])
    return dest.read_bytes()


@fuzz_settings(200)
@given(st.lists(st.tuples(st.sampled_from(["copy", "next", "prev", "type", "entries", "len"]),
                          st.integers(0, 10**4), st.integers(0, 10**6)), min_size=1, max_size=6))
def test_bdb_page_graph_mutations(bdb_bytes: bytes, ops: list[tuple[str, int, int]]) -> None:
    """Pages copied over each other, next/prev links and page types rewired, item counts
    and overflow lengths changed: the reader ends, in bounded time, with a PkgdbError or
    the records; it never follows a link twice."""
    data = bytearray(bdb_bytes)
    pages = len(data) // PS
    for op, a, b in ops:
        page = 1 + a % (pages - 1)
        off = page * PS
        if op == "copy":
            src = (1 + b % (pages - 1)) * PS
            data[off : off + PS] = data[src : src + PS]
        elif op in ("next", "prev"):
            struct.pack_into("<I", data, off + (16 if op == "next" else 12), b % (pages + 3))
        elif op == "type":
            data[off + 25] = [bdb.P_HASH, bdb.P_OVERFLOW, bdb.P_HASH_UNSORTED, 0, 99][b % 5]
        elif op == "entries":
            struct.pack_into("<H", data, off + 20, b % 300)
        else:
            struct.pack_into("<H", data, off + 22, b % 0x10000)
    db = bdb.HashDb(io.BytesIO(bytes(data)), len(data), "img: Packages")
    try:
        with within(10):
            for _key, value in db.items():
                assert len(value) <= len(data)
    except PkgdbError as err:
        assert str(err).startswith("img: Packages: ")


# --- dpkg ------------------------------------------------------------------------------------

STATUS = b"".join(b"Package: p%d\nStatus: install ok installed\nArchitecture: all\n\n" % i
                  for i in range(3))
lines = st.lists(st.sampled_from([b"/usr/bin/x", b"/.", b"", b"usr/rel", b"/a/../../etc",
                                  b"/\xff\xfe", b"/" + b"d/" * 3000, b"  /x", b"\0", b"/x\r",
                                  b"/var/lib/dpkg/status", b":", b"0" * 32 + b"  usr/x",
                                  b"remove-on-upgrade /etc/y"]), max_size=8).map(b"\n".join)


def tree_of(tmp: Path, files: dict[str, bytes], dirs: list[str]) -> FileTree:
    host = {}
    for n, (rel, data) in enumerate(files.items()):
        p = tmp / f"f{n}"
        p.write_bytes(data)
        host[rel] = p
    return debbuild.hand_tree(host, dirs=dirs)


@pytest.mark.filterwarnings("ignore::pkgchunk.errors.PkgdbWarning")
@fuzz_settings(200)
@given(lines, lines, lines, lines, st.sampled_from(["list", "md5sums", "conffiles"]))
def test_dpkg_admin_files(
    listed: bytes, md5: bytes, diversions: bytes, extra: bytes, kind: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = tree_of(Path(tmp), {
            "var/lib/dpkg/status": STATUS,
            "var/lib/dpkg/info/p0.list": listed,
            "var/lib/dpkg/info/p1.md5sums": md5,
            f"var/lib/dpkg/info/p2.{kind}": extra,
            "var/lib/dpkg/diversions": diversions,
        }, ["var/lib/dpkg/info", "usr/bin"])
        reader = dpkg.DpkgReader()
        try:
            with within(20):
                db = reader.read(tree, "var/lib/dpkg/status")
        except PkgdbError as err:
            assert str(err).startswith("hand: var/lib/dpkg/") and "\n" not in str(err)
            return
        for pkg in db.packages:
            assert all(f.path.startswith("/") for f in pkg.files)


@pytest.mark.filterwarnings("ignore::pkgchunk.errors.PkgdbWarning")
@fuzz_settings(150)
@given(st.dictionaries(st.sampled_from(["a", "b", "b.md5sums", "c.md5sums", "..", "d/e"]),
                       st.binary(max_size=120) | st.sampled_from([
                           b"Package: a\n", b"Package: b\nStatus: install ok installed\n",
                           b"Package: a\n\nPackage: a\n", b"Package: \xff\n"]),
                       max_size=4))
def test_dpkg_status_d(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = tree_of(Path(tmp), {f"var/lib/dpkg/status.d/{k}": v for k, v in files.items()
                                   if k not in ("..",)}, ["var/lib/dpkg/status.d"])
        reader = dpkg.StatusDReader()
        (path,) = reader.detect(tree)
        try:
            db = reader.read(tree, path)
        except PkgdbError as err:
            assert str(err).startswith("hand: var/lib/dpkg/status.d/") and "\n" not in str(err)
            return
        assert all(p.name for p in db.packages)


# --- changelogs --------------------------------------------------------------------------------


@fuzz_settings(200)
@given(st.binary(max_size=400) | st.lists(st.sampled_from([
    b" -- A <a@b>  Tue, 05 Mar 2024 10:11:12 +0100", b" -- A <a@b>  Feb 30 99:99:99 1969",
    b" -- <>  Mon, 01 Jan 10000 00:00:00 +9999", b" -- x <y>  " + b"9" * 400, b"pkg (1) x",
    b"\xff\xfe", b""]), max_size=10).map(b"\n".join))
def test_changelog_dates(data: bytes) -> None:
    times = parse_times(data)
    assert list(times) == sorted(times, reverse=True)
    assert all(isinstance(t, int) for t in times)


@pytest.mark.filterwarnings("ignore::pkgchunk.errors.PkgdbWarning")
@fuzz_settings(100)
@given(st.binary(max_size=200), st.integers(0, 100))
def test_changelog_gzip_damage(junk: bytes, cut: int) -> None:
    """A damaged changelog.Debian.gz costs the package its dates, never the database."""
    good = gzip.compress(b" -- A <a@b>  Tue, 05 Mar 2024 10:11:12 +0100\n" * 20)
    data = good[:cut] + junk
    with tempfile.TemporaryDirectory() as tmp:
        tree = tree_of(Path(tmp), {"usr/share/doc/p/changelog.Debian.gz": data}, [])
        assert isinstance(package_times(tree, "p"), tuple)
