"""Reading images: OCI layouts, indexes, oci-archives, docker-archives, and real tools' output."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from pkgchunk.errors import InputError
from pkgchunk.image import Image
from pkgchunk.io import open_image
from pkgchunk.oci.platform import host_arch
from pkgchunk.oci.rootfs import read_rootfs
from tests.helpers import require_tool
from tests.imagebuild import (
    Built,
    Layer,
    build_image,
    build_index,
    chardev,
    digest_of,
    directory,
    fifo,
    file,
    hardlink,
    opaque,
    summary,
    symlink,
    tar_bytes,
    whiteout,
    write_docker_archive,
    write_layout,
    write_oci_archive,
)

OTHER_ARCH = "s390x" if host_arch() != "s390x" else "arm64"

BASE = [
    directory("etc"),
    file("etc/os-release", b"ID=test\n"),
    file("etc/old", b"old"),
    directory("var/cache"),
    file("var/cache/a", b"a"),
    file("usr/bin/tool", b"tool v1", mode=0o755),
    hardlink("usr/bin/tool-link", "usr/bin/tool"),
    symlink("bin", "usr/bin"),
]
UPPER = [
    whiteout("etc/old"),
    opaque("var/cache"),
    file("var/cache/b", b"b"),
    file("usr/bin/tool", b"tool v2", mode=0o755),
    hardlink("usr/bin/other", "usr/bin/tool-link"),
    chardev("dev/null", 1, 3),
    fifo("run/fifo"),
]
TOP = [file(b"srv/caf\xe9", b"\xe9"), file("usr/share/doc", b"d" * 100_000)]

#: What the three layers above flatten to: path -> (kind, content or link target).
EXPECTED = {
    "etc": ("dir", None),
    "etc/os-release": ("reg", b"ID=test\n"),
    "var": ("dir", None),
    "var/cache": ("dir", None),
    "var/cache/b": ("reg", b"b"),
    "usr": ("dir", None),
    "usr/bin": ("dir", None),
    "usr/bin/tool": ("reg", b"tool v2"),
    "usr/bin/tool-link": ("reg", b"tool v1"),
    "usr/bin/other": ("reg", b"tool v1"),
    "bin": ("sym", "usr/bin"),
    "dev": ("dir", None),
    "dev/null": ("chr", None),
    "run": ("dir", None),
    "run/fifo": ("fifo", None),
    "srv": ("dir", None),
    "srv/caf\udce9": ("reg", b"\xe9"),
    "usr/share": ("dir", None),
    "usr/share/doc": ("reg", b"d" * 100_000),
}


def layers(*compressions: str) -> list[Layer]:
    return [Layer(m, compression=c) for m, c in zip((BASE, UPPER, TOP), compressions, strict=True)]


def check_tree(image: Image) -> None:
    tree = image.tree
    got: dict[str, tuple[str, bytes | str | None]] = {}
    for path, entry in tree.entries.items():
        if entry.kind == "reg":
            with tree.open(path) as f:
                got[path] = ("reg", f.read())
        else:
            got[path] = (entry.kind, entry.target or None)
    assert got == EXPECTED
    e = tree.entries
    assert e["usr/bin/tool-link"].link == e["usr/bin/other"].link != 0
    assert e["usr/bin/tool"].link == 0


def test_layout_with_mixed_compression(tmp_path: Path) -> None:
    built = build_image(layers("gzip", "zstd", "none"))
    layout = write_layout(tmp_path / "img", {"v1": built})
    with open_image(f"oci:{layout}:v1") as image:
        check_tree(image)
        workdir = image.workdir
        assert workdir is not None and os.path.isdir(workdir)
        assert image.ref == f"oci:{layout}:v1"
        assert image.manifest == json.loads(built.blobs[built.digest])
        assert image.config == json.loads(built.blobs[built.config_digest])
        assert [i.digest for i in image.layers] == built.layer_digests
        assert [i.diff_id for i in image.layers] == built.diff_ids
        assert [i.size for i in image.layers] == [len(built.blobs[d]) for d in built.layer_digests]
        assert [i.media_type.rsplit(".", 1)[-1] for i in image.layers] == [
            "tar+gzip", "tar+zstd", "tar",
        ]  # fmt: skip
        # every blob maps to a file with exactly its bytes, for byte-for-byte reuse
        assert set(image.blob_path) == set(built.blobs)
        for digest, path in image.blob_path.items():
            assert digest_of(Path(path).read_bytes()) == digest
    assert image.workdir is None and not os.path.exists(workdir)


def test_untagged_single_image_and_bare_path(tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "img", {None: build_image(layers("gzip", "gzip", "gzip"))})
    with open_image(str(layout)) as image:
        check_tree(image)


def test_tag_selects_image(tmp_path: Path) -> None:
    one = build_image([[file("which", b"one")]])
    two = build_image([[file("which", b"two")]])
    layout = write_layout(tmp_path / "img", {"one": one, "two": two})
    for tag in ("one", "two"):
        with open_image(f"oci:{layout}:{tag}") as image, image.tree.open("which") as f:
            assert f.read() == tag.encode()


def test_compression_detected_by_magic_not_media_type(tmp_path: Path) -> None:
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"
    built = build_image(
        [
            Layer(BASE, compression="zstd", media_type=gz),
            Layer(UPPER, compression="none", media_type=gz),
            Layer(TOP, compression="gzip", media_type="application/vnd.oci.image.layer.v1.tar"),
        ]
    )
    with open_image(f"oci:{write_layout(tmp_path / 'img', {'t': built})}:t") as image:
        check_tree(image)
        assert image.layers[0].media_type == gz  # reported as the manifest says


def _variant(content: bytes, arch: str, *, docker: bool = False) -> Built:
    return build_image([[file("arch", content)]], arch=arch, docker=docker)


@pytest.mark.parametrize("docker", [False, True])
def test_nested_index_picks_host_platform(tmp_path: Path, docker: bool) -> None:
    attestation = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + "0" * 64,
        "size": 1,
        "platform": {"os": "unknown", "architecture": "unknown"},
    }
    index = build_index(
        [
            _variant(b"other", OTHER_ARCH, docker=docker),
            _variant(b"host", host_arch(), docker=docker),
            attestation,
        ],
        docker=docker,
    )
    outer = build_index([index])  # an index of an index, as buildx writes
    layout = write_layout(tmp_path / "img", {"multi": outer})
    with open_image(f"oci:{layout}:multi") as image, image.tree.open("arch") as f:
        assert f.read() == b"host"
        assert image.config["architecture"] == host_arch()


def test_only_image_of_foreign_arch_is_used(tmp_path: Path) -> None:
    index = build_index([_variant(b"other", OTHER_ARCH)])
    with open_image(f"oci:{write_layout(tmp_path / 'img', {'t': index})}") as image:
        assert image.config["architecture"] == OTHER_ARCH


def test_untagged_platform_variants_in_index_json(tmp_path: Path) -> None:
    layout = write_layout(
        tmp_path / "img",
        [(None, _variant(b"other", OTHER_ARCH)), (None, _variant(b"host", host_arch()))],
    )
    with open_image(f"oci:{layout}") as image, image.tree.open("arch") as f:
        assert f.read() == b"host"


def test_repeated_layer_is_spooled_once(tmp_path: Path) -> None:
    same = Layer([file("a", b"a" * 1000)], compression="gzip")
    built = build_image([same, [file("b", b"b")], same])
    with open_image(f"oci:{write_layout(tmp_path / 'img', {'t': built})}") as image:
        assert image.workdir is not None
        assert sorted(os.listdir(os.path.join(image.workdir, "layers"))) == ["1.tar", "2.tar"]
        assert image.layers[0] == image.layers[2]
        assert set(image.tree.entries) == {"a", "b"}


def test_oci_archive(tmp_path: Path) -> None:
    built = build_image(layers("gzip", "zstd", "none"))
    archive = write_oci_archive(tmp_path / "img.tar", tmp_path / "work", {"v1": built})
    with open_image(f"oci-archive:{archive}:v1") as image:
        check_tree(image)
        assert image.workdir is not None
        for path in image.blob_path.values():
            assert path.startswith(image.workdir + "/")


@pytest.mark.parametrize("legacy", [True, False])
def test_docker_archive(tmp_path: Path, legacy: bool) -> None:
    built = build_image(layers("gzip", "zstd", "none"))
    other = build_image([[file("x")]])
    archive = write_docker_archive(
        tmp_path / "img.tar", [(["example/img:1"], built), (["other:2", "o:3"], other)],
        legacy=legacy,
    )  # fmt: skip
    for tag in ("example/img:1", "docker.io/example/img:1", "@0"):
        with open_image(f"docker-archive:{archive}:{tag}") as image:
            check_tree(image)
            assert image.config == json.loads(built.blobs[built.config_digest])
            assert [i.diff_id for i in image.layers] == built.diff_ids
            # docker save stores layers uncompressed: digest == diff_id
            assert [i.digest for i in image.layers] == built.diff_ids
            assert image.manifest is not None
            assert [d["digest"] for d in image.manifest["layers"]] == built.diff_ids
            assert image.manifest["config"]["digest"] == built.config_digest
            for digest, path in image.blob_path.items():
                assert digest_of(Path(path).read_bytes()) == digest
    with open_image(f"docker-archive:{archive}:o:3") as image:
        assert set(image.tree.entries) == {"x"}


def test_docker_archive_links_duplicate_layers(tmp_path: Path) -> None:
    same = [file("dup", b"same")]
    built = build_image([same, [file("mid")], same])
    archive = write_docker_archive(tmp_path / "a.tar", [(["d:1"], built)], link_duplicates=True)
    with open_image(f"docker-archive:{archive}") as image:
        assert set(image.tree.entries) == {"dup", "mid"}
        assert image.layers[0].digest == image.layers[2].digest


def test_max_bytes_bounds_uncompressed_size(tmp_path: Path) -> None:
    bomb = Layer([file("zeros", b"\0" * 1_000_000)], compression="gzip")
    built = build_image([bomb])
    assert len(built.blobs[built.layer_digests[0]]) < 10_000
    layout = write_layout(tmp_path / "img", {"t": built})
    with pytest.raises(InputError) as err:
        open_image(f"oci:{layout}", max_bytes=500_000)
    assert str(err.value).startswith(
        f"oci:{layout}: layers hold more than 500000 uncompressed bytes"
    )
    with open_image(f"oci:{layout}", max_bytes=2_000_000) as image:
        assert image.tree.entries["zeros"].size == 1_000_000


def test_failed_read_leaves_no_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    built = build_image([[file("a", b"a")], [hardlink("b", "missing")]])
    layout = write_layout(tmp_path / "img", {"t": built})
    with pytest.raises(InputError):
        open_image(f"oci:{layout}")
    assert list(tmp.iterdir()) == []


# --- images written by real tools ------------------------------------------------------


def populate(root: Path) -> None:
    """A directory with the awkward cases a real image has."""
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    (root / "usr/bin/prog").write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
    os.chmod(root / "usr/bin/prog", 0o755)
    os.link(root / "usr/bin/prog", root / "usr/bin/prog2")
    os.symlink("/etc/hostname", root / "etc/abs-link")
    os.symlink("../usr/bin/prog", root / "etc/rel-link")
    os.mkfifo(root / "etc/fifo")
    with open(os.fsencode(str(root / "etc")) + b"/na\xefve", "wb") as f:
        f.write(b"non-utf8 name")
    (root / "etc/conf").write_text("x=1\n")
    os.chown(root / "etc/conf", 1000, 1000)
    os.setxattr(root / "etc/conf", "user.pkgchunk", b"\x00\xffvalue")
    fix_mtimes(root)


def fix_mtimes(root: Path) -> None:
    """Whole-second, fixed mtimes: edits within the same second as a repack are ambiguous."""
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(dirpath, name), (1_650_000_000, 1_650_000_000),
                     follow_symlinks=False)  # fmt: skip


def umoci_image(tmp_path: Path) -> tuple[Path, Path]:
    """An image made by umoci from a populated rootfs; returns (layout, bundle rootfs)."""
    umoci = require_tool("umoci")
    layout = tmp_path / "layout"
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "init", "--layout", str(layout)], check=True)
    subprocess.run([umoci, "new", "--image", f"{layout}:t"], check=True)
    subprocess.run([umoci, "unpack", "--image", f"{layout}:t", str(bundle)], check=True)
    populate(bundle / "rootfs")
    subprocess.run(
        [umoci, "repack", "--refresh-bundle", "--image", f"{layout}:t", str(bundle)], check=True
    )
    return layout, bundle / "rootfs"


@pytest.mark.slow
def test_umoci_image_equals_its_source_dir(tmp_path: Path) -> None:
    layout, rootfs = umoci_image(tmp_path)
    umoci = require_tool("umoci")
    # a second layer that deletes and replaces files: umoci writes the whiteouts
    os.unlink(rootfs / "etc/rel-link")
    (rootfs / "usr/bin/prog").write_bytes(b"rewritten")  # same inode: prog2 changes too
    (rootfs / "var").mkdir()
    (rootfs / "var/new").write_text("new")
    fix_mtimes(rootfs)
    subprocess.run([umoci, "repack", "--image", f"{layout}:t", str(tmp_path / "bundle")],
                   check=True)  # fmt: skip
    expected = summary(read_rootfs(str(rootfs)).tree)
    with open_image(f"oci:{layout}:t") as image:
        assert len(image.layers) == 2
        got = summary(image.tree)
    assert "etc/rel-link" not in got
    assert set(got) == set(expected)
    for path in expected:
        assert got[path] == expected[path], path


@pytest.mark.slow
def test_skopeo_docker_archive_equals_oci_source(tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    layout, rootfs = umoci_image(tmp_path)
    archive = tmp_path / "d.tar"
    subprocess.run(
        [skopeo, "copy", "--quiet", f"oci:{layout}:t", f"docker-archive:{archive}:pc/img:7"],
        check=True,
    )
    expected = summary(read_rootfs(str(rootfs)).tree)
    with open_image(f"docker-archive:{archive}:pc/img:7") as image:
        assert summary(image.tree) == expected
    with open_image(f"oci:{layout}:t") as image:
        assert summary(image.tree) == expected


@pytest.mark.slow
def test_umoci_unpack_agrees_with_flatten(tmp_path: Path) -> None:
    """umoci applies whiteouts, opaque dirs and hardlinks itself: the trees must match."""
    umoci = require_tool("umoci")
    lower = [
        directory("d", mode=0o755, mtime=1),
        file("d/a", b"a", mtime=1),
        directory("d/sub", mtime=1),
        file("d/sub/x", b"x", mtime=1),
        directory("e", mtime=1),
        file("e/gone", b"g", mtime=1),
        file("e/kept", b"k", mtime=1),
        file("f", b"file", mtime=1),
        file("h1", b"hard", mtime=1),
        hardlink("h2", "h1"),
    ]
    upper = [
        directory("d", mode=0o700, mtime=2),
        opaque("d"),
        file("d/new", b"n", mtime=2),
        directory("e", mtime=1),
        whiteout("e/gone"),
        directory("f", mtime=2),
        file("f/inside", b"i", mtime=2),
        hardlink("h3", "h1"),
    ]
    built = build_image([lower, upper])
    layout = write_layout(tmp_path / "img", {"t": built})
    subprocess.run([umoci, "unpack", "--image", f"{layout}:t", str(tmp_path / "b")], check=True)
    expected = summary(read_rootfs(str(tmp_path / "b/rootfs")).tree)
    with open_image(f"oci:{layout}:t") as image:
        got = summary(image.tree)
    assert got == expected
    assert set(got) == {"d", "d/new", "e", "e/kept", "f", "f/inside", "h1", "h2", "h3"}


def test_tar_bytes_round_trip_sanity() -> None:
    """The helper's tars carry what the specs say (guards the other tests' inputs)."""
    data = tar_bytes([file("a", b"xyz", mode=0o600, xattrs={"user.k": b"\xff"})])
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8",
                      errors="surrogateescape") as tf:  # fmt: skip
        (info,) = tf.getmembers()
        assert (info.name, info.mode, info.size) == ("a", 0o600, 3)
        assert info.pax_headers["SCHILY.xattr.user.k"].encode("utf-8", "surrogateescape") == b"\xff"
    assert hashlib.sha256(data).hexdigest() == digest_of(data).split(":")[1]
