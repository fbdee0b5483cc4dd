"""Flattening layers: the overlay rules of the OCI image spec, member by member."""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from pkgchunk.errors import InputError
from pkgchunk.oci.flatten import flatten
from pkgchunk.tree import FileTree, encode_path
from tests.imagebuild import (
    Member,
    blockdev,
    chardev,
    directory,
    fifo,
    file,
    hardlink,
    opaque,
    symlink,
    tar_bytes,
    whiteout,
)

T = 1_700_000_000


def flat(tmp_path: Path, *layers: Sequence[Member] | bytes) -> FileTree:
    pairs = []
    for n, layer in enumerate(layers, 1):
        path = tmp_path / f"layer{n}.tar"
        path.write_bytes(layer if isinstance(layer, bytes) else tar_bytes(layer))
        pairs.append((f"L{n}", str(path)))
    return flatten(pairs, label="test")


def content(tree: FileTree, path: str) -> bytes:
    with tree.open(path) as f:
        return f.read()


def kinds(tree: FileTree) -> dict[str, str]:
    return {p: e.kind for p, e in tree.entries.items()}


def test_every_kind_with_its_metadata(tmp_path: Path) -> None:
    tree = flat(
        tmp_path,
        [
            directory("./"),
            directory("etc", mode=0o750, uid=1, gid=2, mtime=T + 1),
            file("etc/conf", b"key=value\n", mode=0o4711, uid=1000, gid=100, mtime=T + 2),
            symlink("etc/link", "../usr/share/missing"),
            chardev("dev/null", 1, 3, mode=0o666),
            blockdev("dev/sda", 8, 0, mode=0o660, gid=6),
            fifo("run/pipe", mode=0o600),
        ],
    )
    e = tree.entries
    assert sorted(e, key=encode_path) == [
        "dev", "dev/null", "dev/sda", "etc", "etc/conf", "etc/link", "run", "run/pipe",
    ]  # fmt: skip
    assert (e["etc"].kind, e["etc"].mode, e["etc"].uid, e["etc"].gid, e["etc"].mtime) == (
        "dir", 0o750, 1, 2, T + 1,
    )  # fmt: skip
    conf = e["etc/conf"]
    assert (conf.kind, conf.mode, conf.uid, conf.gid, conf.mtime, conf.size) == (
        "reg", 0o4711, 1000, 100, T + 2, 10,
    )  # fmt: skip
    assert content(tree, "etc/conf") == b"key=value\n"
    assert (e["etc/link"].kind, e["etc/link"].target) == ("sym", "../usr/share/missing")
    assert (e["dev/null"].kind, e["dev/null"].devmajor, e["dev/null"].devminor) == ("chr", 1, 3)
    assert (e["dev/sda"].kind, e["dev/sda"].devmajor, e["dev/sda"].gid) == ("blk", 8, 6)
    assert (e["run/pipe"].kind, e["run/pipe"].mode) == ("fifo", 0o600)
    # parents the layer did not list are implied: 0755 root:root, mtime 0
    for implied in ("dev", "run"):
        assert (e[implied].kind, e[implied].mode, e[implied].uid, e[implied].mtime) == (
            "dir", 0o755, 0, 0,
        )  # fmt: skip


def test_implied_parent_does_not_override_existing_dir(tmp_path: Path) -> None:
    tree = flat(tmp_path, [directory("opt", mode=0o700, mtime=T)], [file("opt/x/y", b"1")])
    assert (tree.entries["opt"].mode, tree.entries["opt"].mtime) == (0o700, T)
    assert (tree.entries["opt/x"].mode, tree.entries["opt/x"].mtime) == (0o755, 0)


def test_names_are_normalised(tmp_path: Path) -> None:
    tree = flat(tmp_path, [file("/etc/abs", b"a"), file("./a/./b/../c", b"c"), file("d//e", b"e")])
    assert set(tree.entries) == {"etc", "etc/abs", "a", "a/c", "d", "d/e"}


def test_whiteout_hides_lower_file_and_subtree(tmp_path: Path) -> None:
    tree = flat(
        tmp_path,
        [file("a/keep", b"k"), file("a/gone", b"g"), file("b/x/y", b"y"), file("b/z", b"z")],
        [whiteout("a/gone"), whiteout("b"), whiteout("never/existed")],
    )
    assert set(tree.entries) == {"a", "a/keep"}


def test_whiteout_does_not_hide_same_layer_entry(tmp_path: Path) -> None:
    for members in (
        [whiteout("f"), file("f", b"new")],
        [file("f", b"new"), whiteout("f")],
    ):
        tree = flat(tmp_path, [file("f", b"old"), file("g", b"g")], members)
        assert set(tree.entries) == {"f", "g"}
        assert content(tree, "f") == b"new"


def test_opaque_dir_hides_lower_contents_only(tmp_path: Path) -> None:
    lower = [
        directory("d", mode=0o700),
        file("d/old", b"o"),
        file("d/sub/deep", b"deep"),
        file("d/sub/also", b"a"),
        file("other", b"x"),
    ]
    for upper in (
        [directory("d", mode=0o751), opaque("d"), file("d/new", b"n"), directory("d/sub")],
        [directory("d", mode=0o751), file("d/new", b"n"), directory("d/sub"), opaque("d")],
    ):
        tree = flat(tmp_path, lower, upper)
        # d/sub is re-created by the upper layer, its lower contents stay hidden
        assert set(tree.entries) == {"d", "d/new", "d/sub", "other"}
        assert tree.entries["d"].mode == 0o751


def test_opaque_root(tmp_path: Path) -> None:
    tree = flat(tmp_path, [file("a", b"a"), file("b/c", b"c")], [file(".wh..wh..opq"), file("n")])
    assert set(tree.entries) == {"n"}


def test_file_replaces_directory_and_back(tmp_path: Path) -> None:
    tree = flat(
        tmp_path,
        [file("x/one", b"1"), file("x/two/three", b"3"), file("y", b"file")],
        [file("x", b"now a file"), file("y/inside", b"i")],
    )
    assert kinds(tree) == {"x": "reg", "y": "dir", "y/inside": "reg"}
    assert content(tree, "x") == b"now a file"
    tree = flat(tmp_path, [file("x/one", b"1")], [symlink("x", "/elsewhere")])
    assert kinds(tree) == {"x": "sym"}


def test_duplicates_last_wins(tmp_path: Path) -> None:
    tree = flat(
        tmp_path,
        [
            file("f", b"first", mode=0o600),
            file("f", b"second", mode=0o644),
            file("d/inner", b"i"),
            directory("d", mode=0o700),
            file("g", b"g"),
            directory("g"),
        ],
    )
    assert content(tree, "f") == b"second"
    assert tree.entries["f"].mode == 0o644
    # a directory entry after its contents updates metadata, keeps the children
    assert tree.entries["d"].mode == 0o700 and "d/inner" in tree
    assert tree.entries["g"].kind == "dir"


def test_hardlinks_within_and_across_layers(tmp_path: Path) -> None:
    tree = flat(
        tmp_path,
        [file("bin/a", b"shared", mode=0o755, uid=3), hardlink("bin/b", "bin/a")],
        [hardlink("sbin/c", "/bin/a"), file("solo", b"s"), hardlink("solo2", "solo")],
    )
    e = tree.entries
    group = {e["bin/a"].link, e["bin/b"].link, e["sbin/c"].link}
    assert len(group) == 1 and 0 not in group
    assert e["solo"].link == e["solo2"].link != 0
    assert e["solo"].link != e["bin/a"].link
    for p in ("bin/b", "sbin/c"):
        # a hardlink is the same inode: data, size and metadata of its target
        assert e[p].data == e["bin/a"].data
        assert (e[p].kind, e[p].mode, e[p].uid, e[p].size) == ("reg", 0o755, 3, 6)
        assert content(tree, p) == b"shared"


def test_hardlink_group_shrinks_when_members_go(tmp_path: Path) -> None:
    tree = flat(
        tmp_path,
        [file("a", b"data"), hardlink("b", "a"), hardlink("c", "a")],
        [whiteout("a"), file("c", b"replaced")],
    )
    # b keeps the data; with its peers gone it is an ordinary file
    assert content(tree, "b") == b"data"
    assert tree.entries["b"].link == 0
    assert tree.entries["c"].link == 0 and content(tree, "c") == b"replaced"


def test_hardlink_to_symlink_and_device(tmp_path: Path) -> None:
    tree = flat(
        tmp_path,
        [symlink("s", "target"), hardlink("s2", "s"), chardev("c", 5, 1), hardlink("c2", "c")],
    )
    e = tree.entries
    assert (e["s2"].kind, e["s2"].target) == ("sym", "target")
    assert (e["c2"].kind, e["c2"].devmajor, e["c2"].devminor) == ("chr", 5, 1)
    assert e["s"].link == e["s2"].link != 0


def test_xattrs_all_namespaces(tmp_path: Path) -> None:
    cap = bytes.fromhex("0100000200100000000000000000000000000000")
    tree = flat(
        tmp_path,
        [
            file(
                "usr/bin/ping",
                b"elf",
                xattrs={
                    "security.capability": cap,
                    "security.selinux": b"system_u:object_r:ping_exec_t:s0\x00",
                    "user.note": b"\xff\xfe binary",
                    "trusted.x": b"",
                },
            ),
            # bsdtar's spelling: URL-encoded name, base64 value (unpadded)
            file("f", pax={"LIBARCHIVE.xattr.user.a%20b": "aGk"}),
        ],
    )
    assert tree.entries["usr/bin/ping"].xattrs == (
        ("security.capability", cap),
        ("security.selinux", b"system_u:object_r:ping_exec_t:s0\x00"),
        ("trusted.x", b""),
        ("user.note", b"\xff\xfe binary"),
    )
    assert tree.entries["f"].xattrs == (("user.a b", b"hi"),)


def test_non_utf8_names(tmp_path: Path) -> None:
    name = b"data/caf\xe9-\xff.txt"
    tree = flat(tmp_path, [file(name, b"latin1"), symlink(b"ln", b"caf\xe9")])
    path = name.decode("utf-8", "surrogateescape")
    assert encode_path(path) == name
    assert content(tree, path) == b"latin1"
    assert encode_path(tree.entries["ln"].target) == b"caf\xe9"


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_other_tar_formats(tmp_path: Path, fmt: int) -> None:
    long = "d/" + "n" * 90 + "/" + "m" * 60
    members = [file(long, b"long"), symlink("s", "t")]
    tree = flat(tmp_path, tar_bytes(members, fmt=fmt))
    assert content(tree, long) == b"long"


def test_fractional_mtime_is_whole_seconds(tmp_path: Path) -> None:
    tree = flat(tmp_path, [file("f", pax={"mtime": "1700000000.75"})])
    assert tree.entries["f"].mtime == 1_700_000_000


def test_empty_layer_file_is_empty_layer(tmp_path: Path) -> None:
    tree = flat(tmp_path, [file("a", b"a")], b"", tar_bytes([]))
    assert set(tree.entries) == {"a"}


def test_member_escaping_root(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        flat(tmp_path, [file("ok")], [file("a/../../etc/passwd", b"x")])
    assert str(err.value) == "L2: member 'a/../../etc/passwd' escapes the image root"


def test_hardlink_to_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        flat(tmp_path, [file("a")], [hardlink("b", "nothere")])
    assert str(err.value) == "L2: member 'b' is a hardlink to missing path 'nothere'"


def test_hardlink_escaping_root(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^L1: member 'b' links to '\.\./x' outside the image"):
        flat(tmp_path, [hardlink("b", "../x")])


def test_hardlink_to_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^L1: member 'b' is a hardlink to directory 'd'$"):
        flat(tmp_path, [directory("d"), hardlink("b", "d")])


def test_truncated_member_data(tmp_path: Path) -> None:
    data = tar_bytes([file("a", b"a"), file("big", b"x" * 5000)])
    # cut inside big's data: its header promises more than the file holds
    with pytest.raises(InputError, match=r"^L1: member 'big' is truncated \(5000 bytes declared\)"):
        flat(tmp_path, data[: 512 * 4 + 100])


def test_corrupt_header_in_the_middle(tmp_path: Path) -> None:
    data = bytearray(tar_bytes([file("a", b"a"), file("b", b"b"), file("c", b"c")]))
    # tar_bytes writes PAX: each plain member is one header + one data block
    second = 1024
    assert data[second : second + 1] == b"b"
    data[second + 148 : second + 156] = b"garbage!"  # break the checksum field
    with pytest.raises(InputError, match=r"^L1: corrupt tar header at offset 1024$"):
        flat(tmp_path, bytes(data))


def test_garbage_layer(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^L1: corrupt tar: "):
        flat(tmp_path, b"this is not a tar file at all" * 30)


def test_huge_extended_header_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 1 << 30
    data = info.tobuf(format=tarfile.USTAR_FORMAT) + b"\0" * 1024
    with pytest.raises(InputError, match=r"^L1: 1073741824-byte extended header at offset 0$"):
        flat(tmp_path, data)


def test_unsupported_member_type(tmp_path: Path) -> None:
    info = tarfile.TarInfo("weird")
    info.type = b"V"  # GNU volume header
    data = info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024
    with pytest.raises(InputError, match=r"^L1: member 'weird' has unsupported type b'V'$"):
        flat(tmp_path, data)


def test_aufs_metadata_is_not_content(tmp_path: Path) -> None:
    tree = flat(
        tmp_path,
        [
            file("a", b"a"),
            directory(".wh..wh.plnk"),
            file(".wh..wh.plnk/123.456", b"aufs hardlink store"),
            file(".wh..wh.aufs"),
            directory("d/.wh..wh.orph"),
        ],
    )
    assert set(tree.entries) == {"a"}
