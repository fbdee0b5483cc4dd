"""rootfs: input: a directory read as it is, without following a single symlink."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from pkgchunk.errors import InputError
from pkgchunk.io import open_image
from pkgchunk.oci.platform import host_arch
from pkgchunk.oci.rootfs import read_rootfs
from pkgchunk.tree import encode_path


def _xattr_ok(path: Path, name: str) -> bool:
    try:
        os.setxattr(path, name, b"probe")
        os.removexattr(path, name)
    except OSError:
        return False
    return True


def test_rootfs_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir(mode=0o750)
    os.chmod(root / "etc", 0o750)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\n")
    os.chown(root / "usr/bin/tool", 12, 34)
    os.chmod(root / "usr/bin/tool", 0o4755)  # after chown, which clears set-uid
    os.utime(root / "usr/bin/tool", (1_600_000_000, 1_600_000_000.9))
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-alias")
    os.link(root / "usr/bin/tool", root / "etc/third")
    os.symlink("/etc/passwd", root / "etc/outside")  # points at the host: must not be followed
    os.symlink("../../..", root / "usr/bin/up")
    os.mkfifo(root / "etc/fifo", 0o640)
    os.chmod(root / "etc/fifo", 0o640)
    raw = os.fsencode(str(root / "etc")) + b"/caf\xe9"
    with open(raw, "wb") as f:
        f.write(b"latin1 name")
    (root / "empty").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "etc/sock"))
    sock.close()
    can_mknod = True
    try:
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        can_mknod = False
    has_xattr = _xattr_ok(root / "empty", "user.k")
    if has_xattr:
        os.setxattr(root / "usr/bin/tool", "user.k", b"v\xff")
        os.setxattr(root / "usr/bin/tool", "trusted.t", b"\x00")

    with open_image(f"rootfs:{root}") as image:
        tree = image.tree
        assert image.ref == f"rootfs:{root}"
        assert image.config == {
            "architecture": host_arch(),
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
        assert image.workdir is None and image.layers == []
    e = tree.entries
    expected = {
        "etc", "etc/caf\udce9", "etc/fifo", "etc/outside", "etc/third",
        "usr", "usr/bin", "usr/bin/tool", "usr/bin/tool-alias", "usr/bin/up", "empty",
    }  # fmt: skip
    if can_mknod:
        expected.add("null")
    assert set(e) == expected  # the socket is skipped
    assert (e["etc"].kind, e["etc"].mode) == ("dir", 0o750)
    tool = e["usr/bin/tool"]
    assert (tool.kind, tool.mode, tool.uid, tool.gid, tool.size, tool.mtime) == (
        "reg", 0o4755, 12, 34, 10, 1_600_000_000,
    )  # fmt: skip
    assert tool.link != 0
    assert e["usr/bin/tool-alias"].link == tool.link == e["etc/third"].link
    assert len({e[p].data for p in ("usr/bin/tool", "usr/bin/tool-alias", "etc/third")}) == 1
    assert (e["etc/outside"].kind, e["etc/outside"].target) == ("sym", "/etc/passwd")
    assert e["usr/bin/up"].target == "../../.."
    assert (e["etc/fifo"].kind, e["etc/fifo"].mode) == ("fifo", 0o640)
    with tree.open("etc/caf\udce9") as f:
        assert f.read() == b"latin1 name"
    assert encode_path("etc/caf\udce9") == b"etc/caf\xe9"
    if can_mknod:
        assert (e["null"].kind, e["null"].devmajor, e["null"].devminor) == ("chr", 1, 3)
    if has_xattr:
        assert tool.xattrs == (("trusted.t", b"\x00"), ("user.k", b"v\xff"))


def test_link_groups_are_only_for_links_inside(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").write_bytes(b"x")
    os.link(tmp_path / "outside", tmp_path / "root/inside")
    tree = read_rootfs(str(tmp_path / "root")).tree
    assert tree.entries["inside"].link == 0


def test_rootfs_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError) as err:
        open_image(f"rootfs:{f}")
    assert str(err.value) == f"rootfs:{f}: {f} is not a directory"
    with pytest.raises(InputError) as err:
        open_image(f"rootfs:{tmp_path}/nope")
    assert str(err.value) == f"rootfs:{tmp_path}/nope: {tmp_path}/nope does not exist"
