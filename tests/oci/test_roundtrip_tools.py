"""Our output as other tools see it: skopeo inspects and copies it, umoci unpacks it.

The umoci check walks the unpacked root filesystem with os.lstat, independently of
pkgchunk's readers, and compares it with the source image's tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pkgchunk.io import open_image
from pkgchunk.oci.write import WriteOptions
from pkgchunk.tree import FileTree, decode_path
from pkgchunk.verify import verify
from tests.helpers import require_tool
from tests.oci.rewrite import rechunk
from tests.oci.writecases import make_source


def run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc.stdout


def walk(root: Path) -> dict[str, tuple[Any, ...]]:
    """Path -> (type, mode, uid, gid, content sha256 / link target / device, inode peers)."""
    out: dict[str, tuple[Any, ...]] = {}
    inodes: dict[int, set[str]] = {}
    raw_root = os.fsencode(root)
    for base, dirs, files in os.walk(raw_root):
        for name in dirs + files:
            full = os.path.join(base, name)
            rel = decode_path(os.path.relpath(full, raw_root))
            st = os.lstat(full)
            fmt = stat.S_IFMT(st.st_mode)
            detail: Any = None
            if stat.S_ISREG(fmt):
                with open(full, "rb") as f:
                    detail = hashlib.sha256(f.read()).hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, set()).add(rel)
            elif stat.S_ISLNK(fmt):
                detail = decode_path(os.readlink(full))
            elif stat.S_ISCHR(fmt) or stat.S_ISBLK(fmt):
                detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[rel] = (fmt, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail, st.st_ino)
    peers = {p: frozenset(g) for g in inodes.values() for p in g}
    return {p: (*v[:5], peers.get(p, frozenset())) for p, v in out.items()}


def expected(tree: FileTree) -> dict[str, tuple[Any, ...]]:
    fmt = {"reg": stat.S_IFREG, "dir": stat.S_IFDIR, "sym": stat.S_IFLNK, "chr": stat.S_IFCHR,
           "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO}
    groups: dict[int, set[str]] = {}
    for p, e in tree.entries.items():
        if e.link:
            groups.setdefault(e.link, set()).add(p)
    out: dict[str, tuple[Any, ...]] = {}
    for p, e in tree.entries.items():
        detail: Any = None
        if e.kind == "reg":
            with tree.open(p) as f:
                detail = hashlib.sha256(f.read()).hexdigest()
        elif e.kind == "sym":
            detail = e.target
        elif e.kind in ("chr", "blk"):
            detail = (e.devmajor, e.devminor)
        peers = frozenset(groups[e.link]) if e.link else frozenset()
        out[p] = (fmt[e.kind], e.mode, e.uid, e.gid, detail, peers)
    return out


@pytest.fixture
def output(tmp_path: Path) -> tuple[str, Path]:
    src = make_source(tmp_path / "src")
    rechunk(src, f"oci:{tmp_path}/out:t", max_layers=5)
    return src, tmp_path / "out"


def test_skopeo_inspects_our_layout(output: tuple[str, Path]) -> None:
    skopeo = require_tool("skopeo")
    _src, out = output
    info = json.loads(run(skopeo, "inspect", f"oci:{out}:t"))
    index = json.loads((out / "index.json").read_text())
    manifest = json.loads(
        (out / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    assert info["Layers"] == [lay["digest"] for lay in manifest["layers"]]
    assert info["Labels"]["org.example.team"] == "writers"
    assert info["Env"] == ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
    raw = json.loads(run(skopeo, "inspect", "--raw", f"oci:{out}:t"))
    assert raw == manifest


def test_skopeo_copies_to_docker_archive_and_back(tmp_path: Path, output: tuple[str, Path]) -> None:
    skopeo = require_tool("skopeo")
    src, out = output
    run(skopeo, "copy", "-q", f"oci:{out}:t", f"docker-archive:{tmp_path}/d.tar:ex/img:1")
    run(skopeo, "copy", "-q", f"docker-archive:{tmp_path}/d.tar", f"oci:{tmp_path}/back:b")
    assert verify(src, f"oci:{tmp_path}/back:b").identical
    assert verify(src, f"docker-archive:{tmp_path}/d.tar").identical


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_skopeo_reads_our_archives(tmp_path: Path, compression: str) -> None:
    skopeo = require_tool("skopeo")
    src = make_source(tmp_path / "src")
    opts = WriteOptions(compression=compression)  # type: ignore[arg-type]
    rechunk(src, f"docker-archive:{tmp_path}/d.tar:ex/img:2", options=opts)
    rechunk(src, f"oci-archive:{tmp_path}/o.tar:t", options=opts)
    run(skopeo, "copy", "-q", f"docker-archive:{tmp_path}/d.tar", f"oci:{tmp_path}/from-d:t")
    run(skopeo, "copy", "-q", f"oci-archive:{tmp_path}/o.tar:t", f"oci:{tmp_path}/from-o:t")
    assert verify(src, f"oci:{tmp_path}/from-d:t").identical
    assert verify(src, f"oci:{tmp_path}/from-o:t").identical
    # skopeo finds the image by the name we stored in RepoTags, and only by it.
    info = json.loads(run(skopeo, "inspect", f"docker-archive:{tmp_path}/d.tar:ex/img:2"))
    assert info["Name"] == "docker.io/ex/img"
    wrong = subprocess.run([skopeo, "inspect", f"docker-archive:{tmp_path}/d.tar:ex/img:3"],
                           capture_output=True, text=True)
    assert wrong.returncode != 0 and "not found" in wrong.stderr


def test_umoci_unpacks_the_same_tree(tmp_path: Path, output: tuple[str, Path]) -> None:
    umoci = require_tool("umoci")
    if os.geteuid() != 0:
        pytest.skip("umoci unpack keeps owners and device nodes only as root")
    src, out = output
    bundle = tmp_path / "bundle"
    run(umoci, "unpack", "--image", f"{out}:t", str(bundle))
    got = walk(bundle / "rootfs")
    with open_image(src) as image:
        want = expected(image.tree)
    assert got.keys() == want.keys()
    for path in sorted(want):
        assert got[path] == want[path], path
    # umoci's own view of the config matches what the image runs.
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["/usr/bin/tool", "--serve", "8080"]
    assert config["process"]["cwd"] == "/srv"


@pytest.mark.slow
def test_real_debian_root_through_umoci(tmp_path: Path) -> None:
    """A real Debian 12 minbase (mmdebstrap, ~40 MB of .debs from the mirror): rechunked
    twice from two places with identical digests, unpacked by umoci to the same tree."""
    mmdebstrap = require_tool("mmdebstrap")
    umoci = require_tool("umoci")
    root = tmp_path / "root"
    run(mmdebstrap, "--quiet", "--variant=minbase", "bookworm", str(root),
        "http://deb.debian.org/debian")
    opts = WriteOptions(source_date_epoch=1_700_000_000, jobs=2)
    first = rechunk(f"rootfs:{root}", f"oci:{tmp_path}/out:t", max_layers=8, options=opts)
    moved = tmp_path / "elsewhere" / "root"
    moved.parent.mkdir()
    os.rename(root, moved)
    second = rechunk(f"rootfs:{moved}", f"oci-archive:{tmp_path}/o.tar:t", max_layers=8,
                     options=opts)
    assert [lay.digest for lay in second.layers] == [lay.digest for lay in first.layers]
    assert second.manifest_digest == first.manifest_digest
    assert verify(f"rootfs:{moved}", f"oci:{tmp_path}/out:t", mtime_clamp=1_700_000_000).identical
    run(umoci, "unpack", "--image", f"{tmp_path}/out:t", str(tmp_path / "bundle"))
    got = walk(tmp_path / "bundle" / "rootfs")
    with open_image(f"rootfs:{moved}") as image:
        want = expected(image.tree)
    assert got.keys() == want.keys()
    assert [p for p in sorted(want) if got[p] != want[p]] == []
