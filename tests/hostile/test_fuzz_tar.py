"""Fuzzing the tar side: generated member lists, mutated tar bytes, mutated compressed
streams, hostile archives. The only failure allowed is one InputError line; whatever is
accepted satisfies the tree's invariants, and writing it back and reading it again gives
the same tree. Examples per test: ``$PKGCHUNK_FUZZ_EXAMPLES`` (docs/security.md).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path

import zstandard
from hypothesis import given
from hypothesis import strategies as st

from pkgchunk.errors import InputError, OutputError
from pkgchunk.image import LayerSpec
from pkgchunk.oci.archive import unpack
from pkgchunk.oci.flatten import flatten
from pkgchunk.oci.spool import Budget, LayerBlob, spool
from pkgchunk.oci.tarwrite import check_specs, write_layer
from pkgchunk.tree import FileTree, ancestors, normalize
from pkgchunk.verify import compare
from tests.hostile.crafted import ext_header, fuzz_settings, member, pax_record, tree_files, within

COMPONENTS = ["a", "b", "c", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh..wh.plnk",
              "caf\udce9", "x y", "\n", "d" * 300]
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
         tarfile.FIFOTYPE, tarfile.REGTYPE, tarfile.REGTYPE]

names = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from(["", "", "/", "./"]),
    st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4),
)


@st.composite
def members(draw: st.DrawFn) -> tarfile.TarInfo:
    info = tarfile.TarInfo(draw(names))
    info.type = draw(st.sampled_from(KINDS))
    info.mode = draw(st.integers(0, 0o7777))
    info.uid = draw(st.sampled_from([0, 1000, 2**31]))
    info.mtime = draw(st.sampled_from([0, 1_700_000_000, 2**33]))
    if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = draw(names)
    if info.type == tarfile.CHRTYPE:
        info.devmajor, info.devminor = draw(st.integers(0, 4095)), draw(st.integers(0, 2**20))
    if draw(st.booleans()):
        info.pax_headers = {"SCHILY.xattr.user.k": draw(st.sampled_from(["", "v", "caf\udce9"]))}
    return info


def tar_of(infos: list[tarfile.TarInfo], data: list[bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for info, content in zip(infos, data, strict=True):
            if info.type == tarfile.REGTYPE:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
            else:
                tf.addfile(info)
    return buf.getvalue()


layers = st.lists(
    st.lists(st.tuples(members(), st.binary(max_size=40)), max_size=12), min_size=1, max_size=3
)


def flatten_bytes(work: Path, tars: list[bytes]) -> FileTree:
    pairs = []
    for n, data in enumerate(tars, 1):
        path = work / f"{n}.tar"
        path.write_bytes(data)
        pairs.append((f"L{n}", str(path)))
    with within(20):
        return flatten(pairs, label="fuzz")


def check_invariants(tree: FileTree) -> None:
    """What every later stage relies on."""
    groups: dict[int, set[tuple[object, ...]]] = {}
    for path, e in tree.entries.items():
        assert path and normalize(path) == path and e.path == path
        # (a '.wh.' name can only be an implied parent, like '.wh.a' of '.wh.a/f': the
        # writer refuses such a tree, see rewrite())
        assert not path.rpartition("/")[2].startswith(".wh.") or e.kind == "dir"
        assert "\0" not in path
        for anc in ancestors(path):
            assert tree.entries[anc].kind == "dir", (path, anc)
        if e.kind == "reg":
            with tree.open(path) as f:
                assert len(f.read()) == e.size
        if e.link:
            groups.setdefault(e.link, set()).add((e.kind, e.data, e.size, e.target))
    assert all(len(g) == 1 for g in groups.values())


def rewrite(tree: FileTree, work: Path) -> FileTree | None:
    """The tree written as one layer and read back (None when the writer refuses it)."""
    spec = LayerSpec(name="all", paths=tuple(tree.paths()))
    try:
        check_specs(tree, [spec], "fuzz")
    except OutputError:
        return None
    path = work / "rewritten.tar"
    with open(path, "wb") as f:
        try:
            write_layer(tree, spec.paths, f)
        except OutputError:
            return None
    return flatten([("R", str(path))], label="fuzz")


def one_line(err: InputError) -> None:
    msg = str(err)
    assert msg.startswith(("L1: ", "L2: ", "L3: ")) and "\n" not in msg, msg


@fuzz_settings(150)
@given(layers)
def test_generated_layers(spec: list[list[tuple[tarfile.TarInfo, bytes]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tars = [tar_of([i for i, _ in lay], [d for _, d in lay]) for lay in spec]
        try:
            tree = flatten_bytes(work, tars)
        except InputError as err:
            one_line(err)
            return
        check_invariants(tree)
        again = rewrite(tree, work)
        if again is not None:
            assert compare(tree, again) == []


def sample_tar() -> bytes:
    infos = []
    for name, kind in [("etc", tarfile.DIRTYPE), ("etc/passwd", tarfile.REGTYPE),
                       ("usr/bin/sh", tarfile.SYMTYPE), ("usr/bin/sh2", tarfile.LNKTYPE),
                       ("dev/null", tarfile.CHRTYPE), ("caf\udce9" + "x" * 120, tarfile.REGTYPE)]:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = "bash" if kind == tarfile.SYMTYPE else "usr/bin/sh"
        info.pax_headers = {"SCHILY.xattr.user.a": "b"}
        infos.append(info)
    return tar_of(infos, [b"root:x:0:0\n" * 3] * len(infos))


SAMPLE = sample_tar()


@fuzz_settings(200)
@given(
    st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(SAMPLE)),
)
def test_mutated_tar_bytes(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SAMPLE)
    for pos, value in edits:
        data[pos] = value
    with tempfile.TemporaryDirectory() as tmp:
        try:
            tree = flatten_bytes(Path(tmp), [bytes(data[:cut] if cut % 3 == 0 else data)])
        except InputError as err:
            one_line(err)
            return
        check_invariants(tree)


@fuzz_settings(100)
@given(
    st.sampled_from(["gzip", "zstd"]),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 3),
)
def test_mutated_compressed_layer(kind: str, edits: list[tuple[int, int]], how: int) -> None:
    """A damaged gzip or zstd layer: InputError naming the layer, or a tar that flattens."""
    blob = bytearray(gzip.compress(SAMPLE, mtime=0) if kind == "gzip"
                     else zstandard.ZstdCompressor(write_checksum=True).compress(SAMPLE))
    for pos, value in edits:
        blob[pos % len(blob)] = value
    if how == 1:
        blob = blob[: edits[0][0] % len(blob)]
    elif how == 2:
        blob += bytes(edits[0][1] for _ in range(edits[0][0] % 64))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "blob").write_bytes(blob)
        try:
            with within(20):
                _, tar = spool("img", "img: layer 1", LayerBlob(str(work / "blob"), ""),
                               str(work / "layer.tar"), Budget("img", 1 << 24))
            check_invariants(flatten_bytes(work, [Path(tar).read_bytes()]))
        except InputError as err:
            assert str(err).startswith(("img: layer 1: ", "L1: ")), err


ARCHIVE_NAMES = ["index.json", "oci-layout", "blobs", "blobs/sha256", "blobs/sha256/x", "../x",
                 "/abs", "a/../../x", ".", "", "link"]


@st.composite
def archive_members(draw: st.DrawFn) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(draw(st.sampled_from(ARCHIVE_NAMES)))
    info.type = draw(st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                                      tarfile.LNKTYPE, tarfile.REGTYPE]))
    if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = draw(st.sampled_from([*ARCHIVE_NAMES, "SENTINEL", "../SENTINEL/keep"]))
    return info, draw(st.binary(max_size=20))


@fuzz_settings(150)
@given(st.lists(archive_members(), max_size=10), st.booleans())
def test_generated_archives_stay_inside(
    entries: list[tuple[tarfile.TarInfo, bytes]], compress: bool
) -> None:
    """Whatever an archive's members say, unpacking creates only regular files and
    directories under its own directory; a sibling directory is never touched."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sentinel = work / "SENTINEL"
        sentinel.mkdir()
        (sentinel / "keep").write_text("keep")
        for info, _ in entries:
            info.linkname = info.linkname.replace("SENTINEL", str(sentinel))
        raw = tar_of([i for i, _ in entries], [d for _, d in entries])
        archive = work / "a.tar"
        archive.write_bytes(gzip.compress(raw) if compress else raw)
        dest = work / "unpacked"
        try:
            with within(20):
                unpack("arc", str(archive), str(dest), max_bytes=1 << 20)
        except InputError as err:
            assert str(err).startswith("arc: ") and "\n" not in str(err)
        assert tree_files(sentinel) == ["keep"] and (sentinel / "keep").read_text() == "keep"
        for base, dirs, files in os.walk(work):
            for name in dirs + files:
                assert not os.path.islink(os.path.join(base, name))
        assert sorted(os.listdir(work)) == sorted(
            ["SENTINEL", "a.tar", *(["unpacked"] if dest.exists() else [])]
        )


@fuzz_settings(100)
@given(st.lists(st.tuples(st.sampled_from([b"path", b"linkpath", b"size", b"mtime", b"uid",
                                            b"SCHILY.xattr.user.x", b"hdrcharset", b"comment",
                                            b"GNU.sparse.size", b"x"]),
                          st.binary(max_size=30)), max_size=5),
       st.sampled_from([tarfile.XHDTYPE, tarfile.XGLTYPE]))
def test_generated_pax_records(records: list[tuple[bytes, bytes]], kind: bytes) -> None:
    """Well-framed records with arbitrary values, in an extended or a global header."""
    payload = b"".join(pax_record(k, v) for k, v in records)
    data = ext_header(payload, kind) + member("f", b"content") + b"\0" * 1024
    with tempfile.TemporaryDirectory() as tmp:
        try:
            tree = flatten_bytes(Path(tmp), [data])
        except InputError as err:
            one_line(err)
            return
        check_invariants(tree)
