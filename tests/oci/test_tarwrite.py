"""The layer tar writer and compressors: order, metadata, links, PAX records, reproducibility."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from pkgchunk.errors import InputError, OutputError
from pkgchunk.image import LayerSpec
from pkgchunk.oci.compress import HashingSink, check_level, compressor
from pkgchunk.oci.tarwrite import check_specs, members, write_layer
from pkgchunk.tree import Entry, FileTree, encode_path
from tests.oci.writecases import TreeBuilder

T = 1_700_000_000
BAD = "caf\udce9"  # b"caf\xe9": not UTF-8


def sample(root: Path) -> FileTree:
    b = TreeBuilder(root)
    b.add("etc", "dir", mode=0o750, uid=1, gid=2, mtime=T + 5)
    b.reg("etc/hosts", b"127.0.0.1 localhost\n", mtime=T + 1)
    b.reg("etc/a-b", b"dash sorts before slash\n", mtime=T)
    b.add("usr", "dir", mtime=T + 9)
    b.add("usr/bin", "dir", mode=0o711, mtime=T + 8)
    b.reg("usr/bin/perl", b"#!perl\n" * 100, mode=0o755, mtime=T + 3, link=1)
    b.reg("usr/bin/perl5", b"#!perl\n" * 100, mode=0o755, mtime=T + 3, link=1)
    b.add("usr/bin/sh", "sym", target="bash", mtime=T)
    b.add("dev", "dir")
    b.add("dev/null", "chr", mode=0o666, devmajor=1, devminor=3)
    b.add("dev/sda", "blk", mode=0o660, devmajor=8, devminor=0, gid=6)
    b.add("dev/pipe", "fifo", mode=0o600)
    b.reg(f"etc/{BAD}", b"latin-1 name\n", uid=1000, gid=1000)
    b.reg("etc/cap", b"x", xattrs=(("security.capability", b"\x01\x00\x00\x02\xff\x00"),
                                   ("user.note", b"caf\xc3\xa9")))
    return b.tree()


def layer_bytes(
    tree: FileTree, paths: list[str] | None = None, source_date_epoch: int | None = None,
    whiteouts: tuple[str, ...] = (),
) -> bytes:
    buf = io.BytesIO()
    write_layer(tree, tree.paths() if paths is None else paths, buf,
                source_date_epoch=source_date_epoch, whiteouts=whiteouts)
    return buf.getvalue()


def read_members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8",
                      errors="surrogateescape") as tf:
        return tf.getmembers()


def test_members_in_byte_order_parents_first(tmp_path: Path) -> None:
    tree = sample(tmp_path)
    names = [m.name for m in read_members(layer_bytes(tree))]
    assert names == tree.paths()
    raw = [encode_path(n) for n in names]
    assert raw == sorted(raw)
    # 'etc/a-b' sorts between 'etc' and 'etc/cap' as bytes ('-' < '/'), never before 'etc'
    assert names.index("etc") < names.index("etc/a-b")
    for i, name in enumerate(names):
        parent = name.rpartition("/")[0]
        if parent:
            assert names.index(parent) < i


def test_needed_parents_carry_tree_metadata(tmp_path: Path) -> None:
    tree = sample(tmp_path)
    got = {m.name: m for m in read_members(layer_bytes(tree, ["usr/bin/sh"]))}
    assert list(got) == ["usr", "usr/bin", "usr/bin/sh"]
    assert (got["usr/bin"].mode, got["usr/bin"].mtime) == (0o711, T + 8)
    assert got["usr"].mtime == T + 9
    assert got["usr/bin/sh"].issym() and got["usr/bin/sh"].linkname == "bash"
    # A parent the tree itself lacks is not invented.
    (tmp_path / "x").mkdir()
    b = TreeBuilder(tmp_path / "x")
    b.reg("a/b/c", b"c")
    assert [m.name for m in read_members(layer_bytes(b.tree()))] == ["a/b/c"]


def test_every_kind_and_attribute(tmp_path: Path) -> None:
    tree = sample(tmp_path)
    data = layer_bytes(tree)
    got = {m.name: m for m in read_members(data)}
    null = got["dev/null"]
    assert null.ischr() and (null.devmajor, null.devminor) == (1, 3)
    assert got["dev/sda"].isblk() and got["dev/sda"].gid == 6 and got["dev/sda"].mode == 0o660
    assert got["dev/pipe"].isfifo()
    assert got["etc"].isdir() and (got["etc"].uid, got["etc"].gid, got["etc"].mode) == (1, 2, 0o750)
    assert got[f"etc/{BAD}"].uid == 1000
    for m in got.values():
        assert m.uname == "" and m.gname == ""
    # The raw header block of the non-UTF-8 name holds the original bytes.
    assert b"etc/caf\xe9" in data
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tf:
        f = tf.extractfile("etc/hosts")
        assert f is not None and f.read() == b"127.0.0.1 localhost\n"


def test_xattrs_as_schily_records_byte_for_byte(tmp_path: Path) -> None:
    tree = sample(tmp_path)
    got = {m.name: m for m in read_members(layer_bytes(tree))}
    pax = got["etc/cap"].pax_headers
    assert pax["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == (
        b"\x01\x00\x00\x02\xff\x00"
    )
    assert pax["SCHILY.xattr.user.note"].encode("utf-8", "surrogateescape") == b"caf\xc3\xa9"


def test_no_atime_ctime_and_only_needed_pax_records(tmp_path: Path) -> None:
    tree = sample(tmp_path)
    data = layer_bytes(tree)
    assert b"atime=" not in data and b"ctime=" not in data
    for m in read_members(data):
        extra = {k for k in m.pax_headers if not k.startswith("SCHILY.xattr.")}
        assert extra <= {"path", "linkpath", "hdrcharset"}, (m.name, extra)


def test_hardlink_group_first_path_is_the_file(tmp_path: Path) -> None:
    tree = sample(tmp_path)
    got = {m.name: m for m in read_members(layer_bytes(tree))}
    assert got["usr/bin/perl"].isreg() and got["usr/bin/perl"].size == 700
    assert got["usr/bin/perl5"].islnk() and got["usr/bin/perl5"].linkname == "usr/bin/perl"
    assert got["usr/bin/perl5"].size == 0


def test_gnu_tar_reads_it(tmp_path: Path) -> None:
    tree = sample(tmp_path)
    (tmp_path / "l.tar").write_bytes(layer_bytes(tree))
    out = subprocess.run(["tar", "-tvf", str(tmp_path / "l.tar")], capture_output=True,
                         check=True).stdout
    lines = out.splitlines()
    assert len(lines) == len(tree)
    assert any(line.endswith(b"usr/bin/perl5 link to usr/bin/perl") for line in lines)
    assert any(b"etc/caf\\351" in line or b"etc/caf\xe9" in line for line in lines)


def test_source_date_epoch_clamps_only_newer_mtimes(tmp_path: Path) -> None:
    tree = sample(tmp_path)
    got = {m.name: m.mtime for m in read_members(layer_bytes(tree, source_date_epoch=T + 2))}
    want = {p: min(e.mtime, T + 2) for p, e in tree.entries.items()}
    assert got == want
    assert got["etc/hosts"] == T + 1 and got["usr"] == T + 2


def test_same_tree_same_bytes_wherever_the_content_lives(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = sample(tmp_path / "a"), sample(tmp_path / "b")
    assert one.entries["etc/hosts"].data != two.entries["etc/hosts"].data
    assert layer_bytes(one) == layer_bytes(two)
    assert layer_bytes(one, source_date_epoch=T) == layer_bytes(two, source_date_epoch=T)
    assert layer_bytes(one) != layer_bytes(one, source_date_epoch=T)


def test_short_content_is_an_input_error(tmp_path: Path) -> None:
    b = TreeBuilder(tmp_path)
    b.reg("f", b"abc")
    tree = b.tree()
    e = tree.entries["f"]
    tree.entries["f"] = Entry(path="f", kind="reg", mode=0o644, size=10, data=e.data)
    with pytest.raises(InputError, match="shorter than its size 10"):
        layer_bytes(tree)


def spec(name: str, *paths: str) -> LayerSpec:
    return LayerSpec(name=name, paths=paths)


def test_check_specs_refuses_bad_plans(tmp_path: Path) -> None:
    tree = sample(tmp_path)
    allp = tree.paths()
    good = [spec("a", *[p for p in allp if p.startswith("usr")]),
            spec("b", *[p for p in allp if not p.startswith("usr")])]
    check_specs(tree, good, "dest")
    split = [spec("a", *[p for p in allp if p != "usr/bin/perl5"]), spec("b", "usr/bin/perl5")]
    with pytest.raises(OutputError, match="hardlink group /usr/bin/perl is split over layers a, b"):
        check_specs(tree, split, "dest")
    with pytest.raises(OutputError, match="leaves out 1 paths"):
        check_specs(tree, [spec("a", *allp[1:])], "dest")
    with pytest.raises(OutputError, match="in layers a and b"):
        check_specs(tree, [spec("a", *allp), spec("b", allp[0])], "dest")
    with pytest.raises(OutputError, match="not in the image"):
        check_specs(tree, [spec("a", *allp, "nope")], "dest")
    tree.entries["etc/.wh.x"] = Entry(path="etc/.wh.x", kind="fifo", mode=0o644)
    with pytest.raises(OutputError, match="cannot be stored in an OCI layer"):
        check_specs(tree, [spec("a", *tree.paths())], "dest")


def test_parent_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    b = TreeBuilder(tmp_path)
    b.add("lib", "sym", target="usr/lib")
    b.reg("lib/x", b"x")
    with pytest.raises(OutputError, match="parent /lib is a sym"):
        members(b.tree(), ["lib/x"])


# --- compressors ---------------------------------------------------------------------------

DATA = b"".join(b"line %d of some compressible text\n" % i for i in range(50_000))


def compressed(kind: str, level: int | None, chunks: int = 7) -> bytes:
    out = io.BytesIO()
    c = compressor(kind, level, out)  # type: ignore[arg-type]
    step = len(DATA) // chunks + 1
    for i in range(0, len(DATA), step):
        c.write(DATA[i : i + step])
    c.close()
    return out.getvalue()


@pytest.mark.parametrize("level", [1, 6, 9])
def test_gzip_is_pythons_gzipfile_with_mtime_zero(level: int) -> None:
    blob = compressed("gzip", level)
    ref = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=ref, mtime=0) as g:
        g.write(DATA)
    assert blob == ref.getvalue()
    assert blob[4:8] == b"\0\0\0\0" and blob[3] == 0  # mtime 0, no FNAME
    assert gzip.decompress(blob) == DATA
    assert compressed("gzip", level, chunks=1) == blob


def test_zstd_frame_is_independent_of_chunking_and_has_no_content_size() -> None:
    blob = compressed("zstd", 3)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(blob) == DATA
    params = zstandard.get_frame_parameters(blob)
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert not params.has_checksum
    assert compressed("zstd", 3, chunks=1) == blob
    assert compressed("zstd", 19) != blob


def test_none_passes_bytes_through_and_sink_hashes() -> None:
    assert compressed("none", None) == DATA
    sink = HashingSink()
    sink.write(DATA)
    assert sink.digest == "sha256:" + hashlib.sha256(DATA).hexdigest()
    assert sink.size == sink.tell() == len(DATA)


def test_levels_are_checked() -> None:
    assert check_level("gzip", None) == 6
    assert check_level("zstd", None) == 3
    with pytest.raises(ValueError, match=r"gzip level must be 0\.\.9"):
        check_level("gzip", 10)
    with pytest.raises(ValueError, match=r"zstd level must be 1\.\.22"):
        check_level("zstd", 0)


def test_whiteouts_are_wh_members_that_flatten_deletes(tmp_path: Path) -> None:
    """A layer above others deletes their paths with ``.wh.`` members, before its own
    members, each an empty root-owned file; flattening the two layers (and GNU tar listing
    them) agrees."""
    from pkgchunk.oci.flatten import flatten

    (tmp_path / "lower").mkdir()
    (tmp_path / "upper").mkdir()
    lower = TreeBuilder(tmp_path / "lower")
    for d in ("etc", "usr", "usr/share", "usr/share/doc"):
        lower.add(d, "dir")
    lower.reg("etc/motd", b"hi\n")
    lower.reg("etc/keep", b"keep\n")
    lower.reg("usr/share/doc/README", b"doc\n")
    lower.reg("usr/share/caf\xe9", b"x")
    upper = TreeBuilder(tmp_path / "upper")
    upper.reg("etc/new", b"new\n")
    whiteouts = ("etc/motd", "usr/share/doc", "usr/share/caf\xe9")
    data = layer_bytes(upper.tree(), whiteouts=whiteouts)
    names = [m.name for m in read_members(data)]
    # Deletions first (in byte order), then the layer's own members.
    assert names[:3] == ["etc/.wh.motd", "usr/share/.wh.caf\xe9", "usr/share/.wh.doc"]
    assert names[3:] == ["etc/new"]
    wh = {m.name: m for m in read_members(data)}["etc/.wh.motd"]
    assert wh.isreg() and wh.size == 0 and (wh.uid, wh.gid, wh.mtime) == (0, 0, 0)
    (tmp_path / "1.tar").write_bytes(layer_bytes(lower.tree()))
    (tmp_path / "2.tar").write_bytes(data)
    flat = flatten([("1", str(tmp_path / "1.tar")), ("2", str(tmp_path / "2.tar"))])
    assert sorted(flat.entries) == ["etc", "etc/keep", "etc/new", "usr", "usr/share"]
    listed = subprocess.run(["tar", "-tf", str(tmp_path / "2.tar")], capture_output=True,
                            check=True).stdout.splitlines()
    assert b"usr/share/.wh.doc" in listed


def test_a_replaced_path_is_deleted_before_its_new_entry(tmp_path: Path) -> None:
    """A directory below replaced by a file in the same layer: the whiteout precedes the
    file even where the name sorts before ``.wh.`` ('-' < '.'), so a sequential extractor
    deletes the old tree and keeps the new file; tar lists them in that order."""
    from pkgchunk.oci.flatten import flatten

    (tmp_path / "lower").mkdir()
    (tmp_path / "upper").mkdir()
    lower = TreeBuilder(tmp_path / "lower")
    lower.add("opt", "dir")
    lower.add("opt/-d", "dir")
    lower.reg("opt/-d/x", b"old\n")
    upper = TreeBuilder(tmp_path / "upper")
    upper.reg("opt/-d", b"new file\n")
    data = layer_bytes(upper.tree(), whiteouts=("opt/-d",))
    assert [m.name for m in read_members(data)] == ["opt/.wh.-d", "opt/-d"]
    (tmp_path / "1.tar").write_bytes(layer_bytes(lower.tree()))
    (tmp_path / "2.tar").write_bytes(data)
    flat = flatten([("1", str(tmp_path / "1.tar")), ("2", str(tmp_path / "2.tar"))])
    assert sorted(flat.entries) == ["opt", "opt/-d"] and flat.entries["opt/-d"].kind == "reg"
