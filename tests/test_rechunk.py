"""The rechunk pipeline end to end: same files out, stable digests, plans, CLI and demo."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.demo import build_demo_image, run_demo
from pkgchunk.diff import diff
from pkgchunk.errors import OutputError
from pkgchunk.image import Image, LayerSpec
from pkgchunk.io import open_image
from pkgchunk.oci.tarwrite import check_specs
from pkgchunk.oci.write import WriteOptions
from pkgchunk.render import diff_text
from pkgchunk.tree import encode_path
from pkgchunk.verify import compare, verify
from tests.imagebuild import build_image, summary, write_docker_archive
from tests.oci.rewrite import rechunk
from tests.oci.topdir import by_top_dir
from tests.oci.writecases import T, TreeBuilder, make_source, rich_layers, split_specs


def manifest_of(layout: Path, tag: str) -> dict[str, object]:
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [m for m in index["manifests"]
               if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    blob = layout / "blobs" / "sha256" / desc["digest"][7:]
    doc: dict[str, object] = json.loads(blob.read_bytes())
    return doc


def test_round_trip_same_files(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    result = rechunk(src, f"oci:{tmp_path}/out:t", max_layers=4)
    assert 1 <= len(result.layers) <= 4
    assert verify(src, f"oci:{tmp_path}/out:t").identical
    with open_image(src) as a, open_image(f"oci:{tmp_path}/out:t") as b:
        assert summary(a.tree) == summary(b.tree)
        assert sum(lay.files for lay in result.layers) == len(a.tree)


def test_docker_archive_source(tmp_path: Path) -> None:
    built = build_image(rich_layers())
    archive = write_docker_archive(tmp_path / "d.tar", [(["x/y:1"], built)])
    rechunk(f"docker-archive:{archive}", f"docker-archive:{tmp_path}/out.tar:x/y:2")
    assert verify(f"docker-archive:{archive}", f"docker-archive:{tmp_path}/out.tar").identical


def test_rootfs_source_with_every_kind(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "dev").mkdir()
    (root / "etc" / "conf").write_text("k=v\n")
    (root / "usr" / "bin" / "tool").write_bytes(b"\x7fELF" * 100)
    os.link(root / "usr" / "bin" / "tool", root / "etc" / "tool-link")  # across top dirs
    os.symlink("../usr/bin/tool", root / "etc" / "sym")
    os.mkfifo(root / "dev" / "fifo")
    os.mknod(root / "dev" / "null", 0o20666, os.makedev(1, 3))
    os.chown(root / "etc" / "conf", 123, 456)
    os.chmod(root / "usr" / "bin" / "tool", 0o4755)
    bad = os.path.join(os.fsencode(root / "etc"), b"caf\xe9")
    with open(bad, "wb") as f:
        f.write(b"latin-1 name")
    try:
        os.setxattr(root / "etc" / "conf", "user.note", b"\x00\xffbinary")
        has_xattr = True
    except OSError:
        has_xattr = False
    os.utime(root / "etc" / "conf", (T, T))
    rechunk(f"rootfs:{root}", f"oci:{tmp_path}/out:t", options=WriteOptions(compression="zstd"))
    assert verify(f"rootfs:{root}", f"oci:{tmp_path}/out:t").identical
    with open_image(f"oci:{tmp_path}/out:t") as back:
        tree = back.tree
        assert tree.entries["etc/tool-link"].link == tree.entries["usr/bin/tool"].link != 0
        assert tree.entries["dev/null"].kind == "chr"
        assert tree.entries["etc/conf"].uid == 123
        assert "etc/caf\udce9" in tree.entries
        if has_xattr:
            assert dict(tree.entries["etc/conf"].xattrs)["user.note"] == b"\x00\xffbinary"


def test_twice_and_elsewhere_same_digests(tmp_path: Path) -> None:
    src = make_source(tmp_path / "a" / "src")
    copy = tmp_path / "b" / "elsewhere" / "src"
    shutil.copytree(tmp_path / "a" / "src", copy)
    opts = WriteOptions(compression="zstd", source_date_epoch=T + 5)
    one = rechunk(src, f"oci:{tmp_path}/o1:t", options=opts, reuse_source=False)
    two = rechunk(src, f"oci:{tmp_path}/o2:t", options=opts, reuse_source=False)
    three = rechunk(f"oci:{copy}:src", f"oci:{tmp_path}/o3:t", options=opts, reuse_source=False)
    assert one.manifest_digest == two.manifest_digest == three.manifest_digest
    gz = rechunk(src, f"oci:{tmp_path}/o4:t", options=WriteOptions(source_date_epoch=T + 5))
    assert gz.manifest_digest != one.manifest_digest
    assert [lay.diff_id for lay in gz.layers] == [lay.diff_id for lay in one.layers]


def test_rechunking_an_output_reuses_its_blobs(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    first = rechunk(src, f"oci:{tmp_path}/o1:t", options=WriteOptions(level=1))
    # Level 9 would compress differently, but each layer's tar is unchanged: copied as is.
    second = rechunk(f"oci:{tmp_path}/o1:t", f"oci:{tmp_path}/o2:t",
                     options=WriteOptions(level=9))
    assert [lay.digest for lay in second.layers] == [lay.digest for lay in first.layers]
    assert all(lay.reused for lay in second.layers)
    third = rechunk(f"oci:{tmp_path}/o1:t", f"oci:{tmp_path}/o3:t",
                    options=WriteOptions(level=9), reuse_source=False)
    assert [lay.digest for lay in third.layers] != [lay.digest for lay in first.layers]
    assert verify(src, f"oci:{tmp_path}/o2:t").identical


def test_plans_as_list_or_function_and_bad_plans(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    seen: list[Image] = []

    def planner(image: Image) -> list[LayerSpec]:
        seen.append(image)
        return split_specs(image.tree, prefix="P")

    by_fn = rechunk(src, f"oci:{tmp_path}/f:t", plan=planner)
    assert len(seen) == 1 and by_fn.layers[0].name == "P0"
    with open_image(src) as image:
        specs = split_specs(image.tree, prefix="Q")
        paths = image.tree.paths()
    by_list = rechunk(src, f"oci:{tmp_path}/l:t", plan=specs)
    assert [lay.name for lay in by_list.layers] == [s.name for s in specs]
    assert manifest_of(tmp_path / "l", "t")["layers"][0]["annotations"][  # type: ignore[index]
        "org.pkgchunk.layer"] == "Q0"
    broken = [LayerSpec("x", tuple(p for p in paths if p != "usr/bin/perl5.36")),
              LayerSpec("y", ("usr/bin/perl5.36",))]
    with pytest.raises(OutputError, match="hardlink group /usr/bin/perl is split"):
        rechunk(src, f"oci:{tmp_path}/bad:t", plan=broken)
    with pytest.raises(OutputError, match="leaves out"):
        rechunk(src, f"oci:{tmp_path}/bad:t", plan=[LayerSpec("x", tuple(paths[1:]))])
    assert not (tmp_path / "bad").exists()


def test_grouping_fits_covers_and_keeps_links(tmp_path: Path) -> None:
    b = TreeBuilder(tmp_path)
    for top in ("bin", "etc", "lib", "opt", "usr", "var"):
        b.add(top, "dir")
        for i in range(20):
            b.reg(f"{top}/f{i:02d}", bytes(100 * (i + 1)))
    b.reg("usr/linked", b"L" * 50, link=1)
    b.reg("bin/linked", b"L" * 50, link=1)
    tree = b.tree()
    for max_layers in (1, 2, 3, 5, 50):
        specs = by_top_dir(tree, max_layers, min_layer_size=1)
        assert 1 <= len(specs) <= max_layers
        check_specs(tree, specs, "test")  # every path once, links together
        assert specs == by_top_dir(tree, max_layers, min_layer_size=1)
        for s in specs:
            assert list(s.paths) == sorted(s.paths, key=encode_path)
    many = by_top_dir(tree, 50, min_layer_size=1)
    assert any(s.name.startswith("usr.") for s in many)  # big directories are split
    (with_links,) = [s for s in many if "usr/linked" in s.paths]
    assert "bin/linked" in with_links.paths
    assert [s.name for s in by_top_dir(tree, 64)] == ["bin", "etc", "lib", "opt", "usr", "var"]
    assert by_top_dir(tree, 1)[0].comment == "pkgchunk: /bin /etc /lib /opt /usr /var"


def test_cli_rechunk_table_and_source_date_epoch(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    runner = CliRunner()
    res = runner.invoke(cli, ["rechunk", src, f"oci:{tmp_path}/o:t", "--compression", "zstd",
                              "--max-layers", "3"], env={"SOURCE_DATE_EPOCH": str(T + 7)})
    assert res.exit_code == 0, res.output
    manifest = manifest_of(tmp_path / "o", "t")
    layers = manifest["layers"]
    assert isinstance(layers, list) and len(layers) <= 3
    lines = res.output.splitlines()
    assert lines[0].split() == [
        "LAYER", "UNCOMPRESSED", "COMPRESSED", "P(change)", "DIGEST", "CONTENTS"
    ]
    rows = lines[1 : 1 + len(layers)]
    for row, desc in zip(rows, layers, strict=True):
        assert row.split()[0] == desc["annotations"]["org.pkgchunk.layer"]
        assert desc["digest"][7:19] in row
    assert lines[1 + len(layers)].startswith(f"{len(layers)} layer")
    config = json.loads((tmp_path / "o" / "blobs" / "sha256" /
                         manifest["config"]["digest"][7:]).read_text())  # type: ignore[index]
    assert config["created"] == "2023-11-14T22:13:27Z"
    assert all(lay["mediaType"].endswith("+zstd") for lay in layers)
    # --source-date-epoch wins over the environment
    res2 = runner.invoke(cli, ["rechunk", src, f"oci:{tmp_path}/o:u", "--source-date-epoch",
                               str(T)], env={"SOURCE_DATE_EPOCH": str(T + 7)})
    assert res2.exit_code == 0, res2.output
    assert verify(src, f"oci:{tmp_path}/o:u", source_date_epoch=T).identical
    # the epoch is a parameter of the build, not of the input: unstated, it is not excused
    assert not verify(src, f"oci:{tmp_path}/o:u").identical
    bad = runner.invoke(cli, ["rechunk", src, f"oci:{tmp_path}/o:v", "--compression", "zstd",
                              "--level", "30"])
    assert bad.exit_code == 2 and "zstd level must be 1..22" in bad.output


def test_demo_builds_rechunks_and_verifies(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_demo(str(tmp_path / "one"), echo=lines.append)
    assert lines[-1].startswith("identical: ") and int(lines[-1].split()[1]) > 300
    # The update story: the layer holding only unchanged packages is not pulled again.
    text = "\n".join(lines)
    change = diff(f"oci:{tmp_path}/one/out:before", f"oci:{tmp_path}/one/out:demo")
    assert 0 < change.pull_bytes < change.total_bytes
    assert diff_text(change) in text  # the demo shows the pull, layer by layer
    changed = [ln.split()[1] for ln in text.splitlines() if ln.startswith("      ~ ")]
    assert "src/tzdata" in changed and "src/libc6" not in changed
    assert " reused" in text
    with open_image(f"oci:{tmp_path}/one/src:demo") as image:
        assert len(image.layers) == 3
        assert "var/lib/dpkg/status" in image.tree
        assert "etc/motd" not in image.tree  # whited out by the update layer
        assert len({e.link for e in image.tree.entries.values() if e.link}) == 1
        with open_image(f"oci:{tmp_path}/one/out:demo") as out:
            # Only mtimes moved (the clamp policy), and verify knows the policy from the label.
            assert compare(image.tree, out.tree, ignore_mtime=True) == []
    assert verify(f"oci:{tmp_path}/one/src:demo", f"oci:{tmp_path}/one/out:demo").identical
    # Deterministic: another directory, same source and output digests.
    build_demo_image(str(tmp_path / "two"))
    assert (tmp_path / "one" / "src" / "index.json").read_bytes() == (
        tmp_path / "two" / "index.json").read_bytes()
    res = CliRunner().invoke(cli, ["demo", str(tmp_path / "three")])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == lines[-1]
    assert (tmp_path / "three" / "out" / "index.json").read_bytes() == (
        tmp_path / "one" / "out" / "index.json").read_bytes()
