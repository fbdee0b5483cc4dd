"""Crafted layer tars: every one gives one InputError line naming the layer, or a tree that
rechunks into an image verify finds identical; never a hang, a traceback or a huge heap.

Plain escapes, truncation and simple bad headers are in test_flatten.py; this file has
what a tar writer would refuse to produce (raw headers, pax records, base-256 numbers).
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pkgchunk.errors import InputError
from pkgchunk.oci import flatten as flatten_mod
from pkgchunk.oci.flatten import MAX_DEVICE, flatten
from pkgchunk.oci.targuard import MAX_EXT_CHAIN, MAX_EXT_HEADER
from pkgchunk.tree import FileTree, encode_path
from pkgchunk.verify import verify
from tests.hostile.crafted import (
    END,
    ext_header,
    gnu_number_header,
    header,
    layout_of_tars,
    member,
    pax_member,
    pax_record,
    tar_of,
    within,
)
from tests.imagebuild import directory, file, hardlink, symlink, tar_bytes
from tests.oci.rewrite import rechunk


def flat(tmp_path: Path, *tars: bytes) -> FileTree:
    pairs = []
    for n, data in enumerate(tars, 1):
        path = tmp_path / f"layer{n}.tar"
        path.write_bytes(data)
        pairs.append((f"L{n}", str(path)))
    with within(10):
        return flatten(pairs, label="test")


def refused(tmp_path: Path, data: bytes) -> str:
    with pytest.raises(InputError) as err:
        flat(tmp_path, data)
    msg = str(err.value)
    assert msg.startswith("L1: ") and "\n" not in msg, msg
    return msg[4:]


def sparse_01() -> bytes:
    return pax_member(pax_record(b"GNU.sparse.map", b"0,1")
                      + pax_record(b"GNU.sparse.realsize", b"4096"))


def sparse_10() -> bytes:
    return pax_member(
        pax_record(b"GNU.sparse.major", b"1") + pax_record(b"GNU.sparse.minor", b"0")
        + pax_record(b"GNU.sparse.name", b"f") + pax_record(b"GNU.sparse.realsize", b"9"),
        data=b"1\n0\n1\nx",
    )


def chain(n: int, kind: bytes) -> bytes:
    payload = b"a\0" if kind == tarfile.GNUTYPE_LONGNAME else pax_record(b"comment", b"c")
    return ext_header(payload, kind) * n + member("f", b"x")


#: name -> (tar bytes, a fragment of the message)
REFUSED: dict[str, tuple[Callable[[], bytes], str]] = {
    # escapes that only a raw header or a pax record can carry
    "pax path climbs out": (
        lambda: pax_member(pax_record(b"path", b"../../etc/shadow")), "escapes the image root"),
    "pax path absolute then out": (
        lambda: pax_member(pax_record(b"path", b"/../etc/shadow")), "escapes the image root"),
    "gnu long name climbs out": (
        lambda: ext_header(b"a/../../../x\0", tarfile.GNUTYPE_LONGNAME) + member("short", b"x"),
        "escapes the image root"),
    "pax hardlink target out": (
        lambda: member("a", b"a") + ext_header(pax_record(b"linkpath", b"../a"))
        + header("b", tarfile.LNKTYPE), "outside the image root"),
    "hardlink to a later member": (
        lambda: header("b", tarfile.LNKTYPE, linkname="a") + member("a", b"a"),
        "hardlink to missing path"),
    # names no filesystem can hold
    "NUL in pax path": (lambda: pax_member(pax_record(b"path", b"etc/pass\0wd")), "NUL byte"),
    "NUL in symlink target": (
        lambda: ext_header(pax_record(b"linkpath", b"/etc\0x")) + header("s", tarfile.SYMTYPE),
        "NUL byte"),
    "NUL in hardlink target": (
        lambda: member("a", b"a") + ext_header(pax_record(b"linkpath", b"a\0b"))
        + header("b", tarfile.LNKTYPE), "NUL byte"),
    "name of PATH_MAX bytes": (
        lambda: pax_member(pax_record(b"path", b"d/" * 2047 + b"xx")), "more than 4095"),
    "8 MiB pax path of 4M components": (
        lambda: pax_member(pax_record(b"path", b"a/" * (4 << 20))), "more than 4095"),
    "symlink target of PATH_MAX bytes": (
        lambda: ext_header(pax_record(b"linkpath", b"t" * 4096)) + header("s", tarfile.SYMTYPE),
        "link target of 4096 bytes"),
    "hardlink target of 1 MiB": (
        lambda: member("a", b"a") + ext_header(pax_record(b"linkpath", b"a/" * (1 << 19)))
        + header("b", tarfile.LNKTYPE), "link target of 1048576 bytes"),
    "whiteout of '.'": (lambda: member("d/.wh..", b""), "not a valid whiteout"),
    "whiteout of nothing": (lambda: member(".wh.", b""), "not a valid whiteout"),
    "regular file named the root": (lambda: member("./", b"x"), "names the root"),
    # sizes and numbers
    "negative size (base-256)": (
        lambda: gnu_number_header("f", data=b"", size=-512), "negative size"),
    "size past the end": (
        lambda: header("f", tarfile.REGTYPE, 10**12, fmt=tarfile.GNU_FORMAT), "truncated"),
    "pax size past the end": (
        lambda: pax_member(pax_record(b"size", b"99999999999999999999")), "truncated"),
    "mtime NaN": (lambda: pax_member(pax_record(b"mtime", b"nan")), "mtime out of range"),
    "mtime infinite": (lambda: pax_member(pax_record(b"mtime", b"-inf")), "mtime out of range"),
    "mtime past 2**53": (
        lambda: gnu_number_header("f", mtime=2**60 + 1), "mtime out of range"),
    "device major too large": (
        lambda: gnu_number_header("d", tarfile.CHRTYPE, devmajor=2**40), "device number"),
    "device minor negative": (
        lambda: gnu_number_header("d", tarfile.BLKTYPE, devminor=-1), "device number"),
    "directory with data": (
        lambda: header("d", tarfile.DIRTYPE, 600) + b"y" * 1024 + member("f", b"1"),
        "corrupt tar header"),
    # pax records: strict parsing, as Python >= 3.11.10 does
    "pax record length not a number": (lambda: pax_member(b"xx path=a\n"), "malformed pax"),
    "pax record length zero": (lambda: pax_member(b"0 path=a\n"), "malformed pax"),
    "pax record length too short": (lambda: pax_member(b"3 a=\n"), "malformed pax"),
    "pax record longer than header": (lambda: pax_member(b"999 path=a\n"), "malformed pax"),
    "pax record length of 30 digits": (
        lambda: pax_member(b"9" * 30 + b" path=a\n"), "malformed pax"),
    "pax record without =": (lambda: pax_member(b"11 path:a\n\n"), "malformed pax"),
    "pax record with empty key": (lambda: pax_member(b"7 =abc\n"), "malformed pax"),
    "pax record not ending in newline": (lambda: pax_member(b"9 path=ab"), "malformed pax"),
    "pax records: 4 MB of digits (ReDoS)": (
        lambda: pax_member(b"1" * (4 << 20)), "malformed pax"),
    "pax records: 3 MB of '3 a' (ReDoS)": (
        lambda: pax_member(b"3 a" * (1 << 20) + b"="), "malformed pax"),
    # extension headers
    "pax header over the limit": (
        lambda: ext_header(b"", size=MAX_EXT_HEADER + 1) + END, "-byte extended header"),
    "gnu long name over the limit": (
        lambda: ext_header(b"", tarfile.GNUTYPE_LONGNAME, size=1 << 40) + END,
        "-byte extended header"),
    "global header over the limit": (
        lambda: ext_header(b"", tarfile.XGLTYPE, size=1 << 33) + END, "-byte extended header"),
    f"{MAX_EXT_CHAIN + 1} pax headers in a row": (
        lambda: chain(MAX_EXT_CHAIN + 1, tarfile.XHDTYPE), "extended headers in a row"),
    "5000 long-name headers in a row (recursion)": (
        lambda: chain(5000, tarfile.GNUTYPE_LONGNAME), "extended headers in a row"),
    "5000 global headers in a row (recursion)": (
        lambda: chain(5000, tarfile.XGLTYPE), "extended headers in a row"),
    # sparse files are read (tests/oci/test_sparse.py); malformed maps are refused
    "pax sparse 0.0 numblocks wrong": (
        lambda: pax_member(pax_record(b"GNU.sparse.size", b"10")
                           + pax_record(b"GNU.sparse.numblocks", b"1")), "numblocks says 1"),
    "pax sparse 0.1 maps more than stored": (
        lambda: pax_member(pax_record(b"GNU.sparse.map", b"0,5")
                           + pax_record(b"GNU.sparse.realsize", b"4096")), "malformed sparse map"),
    "pax sparse 0.1 map past the end": (
        lambda: pax_member(pax_record(b"GNU.sparse.map", b"4096,1")
                           + pax_record(b"GNU.sparse.realsize", b"4096")), "malformed sparse map"),
    "pax sparse 1.0 map past the data": (sparse_10, "sparse map runs past"),
    "pax sparse 2.0": (
        lambda: pax_member(pax_record(b"GNU.sparse.major", b"2")
                           + pax_record(b"GNU.sparse.realsize", b"1")), "not supported"),
    "sparse via global header": (
        lambda: ext_header(pax_record(b"GNU.sparse.major", b"1"), tarfile.XGLTYPE)
        + member("f", b"x"), "global pax header"),
    # xattr records
    "libarchive xattr not base64": (
        lambda: pax_member(pax_record(b"LIBARCHIVE.xattr.user.x", b"!!")), "malformed xattr"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused(tmp_path: Path, case: str) -> None:
    make, fragment = REFUSED[case]
    msg = refused(tmp_path, tar_of(make()))
    assert fragment in msg, msg


def test_chain_at_the_limit_is_fine(tmp_path: Path) -> None:
    tree = flat(tmp_path, tar_of(chain(MAX_EXT_CHAIN, tarfile.XHDTYPE)))
    assert set(tree.entries) == {"f"}


def test_lenient_pax_values_are_ignored_or_kept(tmp_path: Path) -> None:
    """Well-framed records with odd values: unknown keys ignored, bad numbers read as 0
    (tarfile's rule), non-UTF-8 keys and values kept byte for byte."""
    records = (
        pax_record(b"comment", b"\xff\xfe anything") + pax_record(b"x.unknown", b"")
        + pax_record(b"uid", b"not a number") + pax_record(b"\xff\xfekey", b"v")
        + pax_record(b"SCHILY.xattr.user.raw", b"\x00\xff\x01")
    )
    tree = flat(tmp_path, tar_of(pax_member(records, data=b"content")))
    e = tree.entries["f"]
    assert (e.uid, e.size, e.xattrs) == (0, 7, (("user.raw", b"\x00\xff\x01"),))


def test_global_header_applies_to_every_later_member(tmp_path: Path) -> None:
    glob = ext_header(pax_record(b"SCHILY.xattr.user.g", b"v") + pax_record(b"uid", b"7"),
                      tarfile.XGLTYPE)
    tree = flat(tmp_path, tar_of(member("a", b"a"), glob, member("b", b"b"), member("c", b"c")))
    got = {p: (e.uid, e.xattrs) for p, e in tree.entries.items()}
    assert got == {"a": (0, ()), "b": (7, (("user.g", b"v"),)), "c": (7, (("user.g", b"v"),))}


def test_global_header_amplification_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One global header applies to every member after it: 1 MiB of xattr times 100 tiny
    members is 100 MiB of memory from a 150 KiB tar. The metadata budget stops it."""
    monkeypatch.setattr(flatten_mod, "MAX_METADATA_BYTES", 32 << 20)
    glob = ext_header(pax_record(b"SCHILY.xattr.user.big", b"v" * (1 << 20)), tarfile.XGLTYPE)
    members = [member(f"f{i}", b"") for i in range(100)]
    msg = refused(tmp_path, tar_of(glob, *members))
    assert msg == f"names, link targets and pax records exceed {32 << 20} bytes"
    assert flatten_mod.MAX_METADATA_BYTES == 32 << 20 != 1 << 30  # the patched one was used


def test_default_budgets() -> None:
    """The limits docs/security.md states."""
    assert (MAX_EXT_HEADER, MAX_EXT_CHAIN) == (16 << 20, 8)
    assert (flatten_mod.MAX_METADATA_BYTES, MAX_DEVICE) == (1 << 30, 8**7 - 1)


# --- odd but valid: kept exactly, rechunked into an identical image ------------------------

LONG = "deep/" * 818 + "leaf"  # 4094 bytes: the longest path Linux can create is 4095
WIDE = "w" * 300  # one component over NAME_MAX


def odd_layers() -> list[bytes]:
    one = [
        file("/etc/absolute", b"abs"),
        file("./rel/./x//y", b"rel"),
        file("a/b/../c", b"dotdot inside"),
        file(b"caf\xe9/\xff\xfe", b"latin-1 and junk"),
        symlink(b"nonutf8-link", b"\x80\x81/target"),
        file(LONG, b"long"),
        file(f"{WIDE}/{WIDE}", b"wide"),
        file("new\nline and\ttab and \\ back", b"odd chars"),
        file("-leading-dash", b"-"),
        *(symlink(f"chain40/{i}", f"{i + 1}") for i in range(40)),
        file("chain40/40", b"end of chain"),
        *(symlink(f"chain41/{i}", f"{i + 1}") for i in range(41)),
        file("chain41/41", b"end of chain"),
        symlink("loop/a", "b"),
        symlink("loop/b", "a"),
        symlink("loop/self", "self"),
        symlink("up", "../../../.."),
        symlink("root", "/"),
        symlink("host-passwd", "/etc/passwd"),
        symlink("dangling", "/nonexistent/x"),
        file("hl/a", b"hard"),
        hardlink("hl/b", "hl/a"),
        hardlink("hl/c", "hl/b"),
        hardlink("hl/to-link", "loop/a"),
        hardlink("hl/self", "hl/self-target"),
        file("dup", b"first"),
        file("dup", b"second"),
        file("dir-then-file/x", b"x"),
        file("file-then-dir", b"f"),
        directory("file-then-dir"),
        symlink("sym-then-dir", "/etc"),
        file("sym-then-dir/passwd", b"not the host's"),
    ]
    two = [
        file("dir-then-file", b"replaces a directory"),
        hardlink("hl/d", "hl/a"),
        file(b"caf\xe9/\xff\xfe", b"replaced in layer 2"),
    ]
    raw = [
        ext_header(pax_record(b"comment", b"git archive style"), tarfile.XGLTYPE),
        pax_member(pax_record(b"hdrcharset", b"BINARY") + pax_record(b"path", b"bin\xffary"),
                   data=b"binary name"),
        pax_member(pax_record(b"uid", b"1099511627776") + pax_record(b"gid", b"4294967295"),
                   name="big-ids"),
        pax_member(pax_record(b"mtime", b"-86400.5"), name="before-1970"),
        ext_header(b"g" * 1000 + b"\0", tarfile.GNUTYPE_LONGNAME) + member("x", b"gnu long"),
        gnu_number_header("maxdev", tarfile.CHRTYPE, devmajor=MAX_DEVICE, devminor=MAX_DEVICE),
    ]
    return [tar_bytes(one), tar_bytes(two), tar_of(*raw)]


def with_hardlink_fixed(layers: list[bytes]) -> list[bytes]:
    """hl/self links to a path that does not exist yet: make the target exist first."""
    return [tar_bytes([file("hl/self-target", b"t")]), *layers]


def test_odd_but_valid_layers(tmp_path: Path) -> None:
    tree = flat(tmp_path, *with_hardlink_fixed(odd_layers()))
    e = tree.entries
    assert {"etc/absolute", "rel/x/y", "a/c", LONG, f"{WIDE}/{WIDE}"} <= set(e)
    assert encode_path(e["nonutf8-link"].target) == b"\x80\x81/target"
    assert "bin\udcffary" in e and ("g" * 1000) in e
    assert (e["big-ids"].uid, e["big-ids"].gid, e["before-1970"].mtime) == (2**40, 2**32 - 1,
                                                                           -86401)
    assert (e["maxdev"].devmajor, e["maxdev"].devminor) == (MAX_DEVICE, MAX_DEVICE)
    assert e["dir-then-file"].kind == "reg" and "dir-then-file/x" not in e
    assert e["file-then-dir"].kind == "dir"
    assert e["sym-then-dir"].kind == "dir" and e["sym-then-dir/passwd"].kind == "reg"
    links = {p for p in e if p.startswith("hl/") and e[p].link}
    assert {e[p].link for p in ("hl/a", "hl/b", "hl/c", "hl/d")} == {e["hl/a"].link}
    assert e["hl/to-link"].kind == "sym" and "hl/to-link" in links
    # resolution never leaves the tree, never loops
    assert tree.resolve("chain40/0") == "chain40/40"  # 40 links: Linux's limit too
    assert tree.resolve("chain41/0") is None
    assert tree.resolve("chain41/0", follow_last=False) == "chain41/0"
    assert tree.resolve("loop/a") is None and tree.resolve("loop/self") is None
    assert tree.resolve("up") == "" and tree.resolve("root/etc/absolute") == "etc/absolute"
    assert tree.resolve("host-passwd") is None  # the tree has no etc/passwd
    assert tree.resolve(LONG) == LONG


def test_odd_but_valid_layers_rechunk_identically(tmp_path: Path) -> None:
    src = layout_of_tars(tmp_path / "src", *with_hardlink_fixed(odd_layers()))
    dest = f"oci:{tmp_path}/out:v1"
    with within(60):
        rechunk(src, dest)
        result = verify(src, dest)
    assert result.identical, [str(d) for d in result.differences]
    assert result.paths > 90


def test_deep_tree_stays_linear(tmp_path: Path) -> None:
    """2000 directories deep (4000-byte paths), 500 files at the bottom: every layer member
    and every written parent walks only up to the first known directory."""
    deep = "d/" * 2000
    layer = tar_bytes([file(f"{deep}f{i}", b"x") for i in range(500)])
    src = layout_of_tars(tmp_path / "src", layer)
    with within(30):
        rechunk(src, f"oci:{tmp_path}/out:t")
        result = verify(src, f"oci:{tmp_path}/out:t")
    assert result.identical and result.paths == 2500
