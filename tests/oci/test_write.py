"""Writing images: layouts, archives, config and manifest, blob reuse, tags, reproducibility."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pkgchunk.image import LayerSpec
from pkgchunk.io import open_image
from pkgchunk.oci.compress import LAYER_MEDIA_TYPES, compressor
from pkgchunk.oci.tarwrite import write_layer
from pkgchunk.oci.write import LAYER_ANNOTATION, ReusableBlob, WriteOptions, write_image
from pkgchunk.verify import compare
from tests.imagebuild import summary
from tests.oci.writecases import CONFIG, decompress, files_under, make_source, sha256, split_specs

SDE = 1_700_000_050


def layout_json(layout: Path, digest: str) -> dict[str, Any]:
    blob = layout / "blobs" / "sha256" / digest.split(":")[1]
    doc: dict[str, Any] = json.loads(blob.read_bytes())
    return doc


def config_of(layout: Path, manifest_digest: str) -> dict[str, Any]:
    return layout_json(layout, layout_json(layout, manifest_digest)["config"]["digest"])


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def index_tags(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_text())
    return {
        (m.get("annotations") or {}).get("org.opencontainers.image.ref.name", ""): m["digest"]
        for m in index["manifests"]
    }


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layout_round_trip(tmp_path: Path, compression: str) -> None:
    src = make_source(tmp_path / "src")
    out = tmp_path / "out"
    with open_image(src) as image:
        specs = split_specs(image.tree)
        result = write_image(
            image.tree, image.config, specs, f"oci:{out}:t",
            WriteOptions(compression=compression),  # type: ignore[arg-type]
        )
        with open_image(f"oci:{out}:t") as back:
            assert compare(image.tree, back.tree) == []
            assert summary(back.tree) == summary(image.tree)
    manifest = layout_json(out, result.manifest_digest)
    config = layout_json(out, manifest["config"]["digest"])
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert len(manifest["layers"]) == len(specs) == len(result.layers)
    diff_ids = []
    for desc, spec, lay in zip(manifest["layers"], specs, result.layers, strict=True):
        assert desc["mediaType"] == LAYER_MEDIA_TYPES[compression]  # type: ignore[index]
        data = blob(out, desc["digest"])
        assert sha256(data) == desc["digest"] and len(data) == desc["size"]
        tar = decompress(data)
        diff_ids.append(sha256(tar))
        assert desc["annotations"][LAYER_ANNOTATION] == spec.name
        assert desc["annotations"]["org.example.top"] == dict(spec.annotations)["org.example.top"]
        assert (lay.diff_id, lay.tar_size, lay.files) == (sha256(tar), len(tar), len(spec.paths))
        with tarfile.open(fileobj=io.BytesIO(tar), encoding="utf-8",
                          errors="surrogateescape") as tf:
            names = set(tf.getnames())
        assert set(spec.paths) <= names
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    assert index_tags(out) == {"t": result.manifest_digest}


def test_config_is_kept_and_layers_described(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    with open_image(src) as image:
        specs = split_specs(image.tree)
        plain = write_image(image.tree, image.config, specs, f"oci:{tmp_path}/a:t")
        dated = write_image(
            image.tree, image.config, specs, f"oci:{tmp_path}/b:t",
            WriteOptions(source_date_epoch=SDE, labels={"org.pkgchunk.plan": "v1 {}"}),
        )
    for result, layout in ((plain, tmp_path / "a"), (dated, tmp_path / "b")):
        config = config_of(layout, result.manifest_digest)
        for key in ("Env", "Entrypoint", "Cmd", "User", "WorkingDir", "ExposedPorts", "Volumes",
                    "StopSignal"):
            assert config["config"][key] == CONFIG["config"][key]
        assert config["author"] == CONFIG["author"]
        assert config["architecture"] and config["os"] == "linux"
        assert [h["created_by"] for h in config["history"]] == [s.comment for s in specs]
    a = config_of(tmp_path / "a", plain.manifest_digest)
    b = config_of(tmp_path / "b", dated.manifest_digest)
    assert a["created"] == CONFIG["created"]
    assert {h["created"] for h in a["history"]} == {CONFIG["created"]}
    assert b["created"] == "2023-11-14T22:14:10Z"  # SDE in RFC 3339 UTC
    assert {h["created"] for h in b["history"]} == {"2023-11-14T22:14:10Z"}
    assert a["config"]["Labels"] == CONFIG["config"]["Labels"]
    assert b["config"]["Labels"] == {**CONFIG["config"]["Labels"], "org.pkgchunk.plan": "v1 {}"}


def test_source_date_epoch_clamps_mtimes(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    with open_image(src) as image:
        write_image(image.tree, image.config, split_specs(image.tree), f"oci:{tmp_path}/o:t",
                    WriteOptions(source_date_epoch=SDE))
        with open_image(f"oci:{tmp_path}/o:t") as back:
            got = {p: e.mtime for p, e in back.tree.entries.items()}
            want = {p: min(e.mtime, SDE) for p, e in image.tree.entries.items()}
            assert got == want
            assert any(e.mtime > SDE for e in image.tree.entries.values())
            assert compare(image.tree, back.tree, mtime_clamp=SDE) == []
            assert compare(image.tree, back.tree) != []


def test_existing_layout_keeps_other_tags_and_blobs(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    out = tmp_path / "out"
    with open_image(src) as image:
        specs = split_specs(image.tree)
        one = write_image(image.tree, image.config, specs, f"oci:{out}:one")
        (out / "README.keep").write_text("not ours")
        two = write_image(image.tree, image.config, specs, f"oci:{out}:two",
                          WriteOptions(compression="zstd"))
        assert index_tags(out) == {"one": one.manifest_digest, "two": two.manifest_digest}
        blobs_before = files_under(out / "blobs")
        again = write_image(image.tree, image.config, [LayerSpec("all", tuple(image.tree.paths()))],
                            f"oci:{out}:one")
        untagged = write_image(image.tree, image.config, specs, f"oci:{out}")
        write_image(image.tree, image.config, specs, f"oci:{out}")
    index = json.loads((out / "index.json").read_text())
    # 'one' replaced in place, 'two' untouched; no tag means the tag 'latest', added once.
    assert [m["digest"] for m in index["manifests"]] == [
        again.manifest_digest, two.manifest_digest, untagged.manifest_digest
    ]
    assert untagged.manifest_digest == one.manifest_digest
    assert index["manifests"][2]["annotations"] == {"org.opencontainers.image.ref.name": "latest"}
    with open_image(f"oci:{out}") as plain:  # a plain read takes 'latest' among several
        assert [la.digest for la in plain.layers] == [w.digest for w in untagged.layers]
    assert blobs_before <= files_under(out / "blobs")
    assert (out / "README.keep").read_text() == "not ours"
    with open_image(f"oci:{out}:two") as back, open_image(src) as image:
        assert compare(image.tree, back.tree) == []


def test_blobs_and_index_are_readable_files_and_no_temp_left(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    out = tmp_path / "out"
    with open_image(src) as image:
        write_image(image.tree, image.config, split_specs(image.tree), f"oci:{out}:t")
    for path in [out / "index.json", out / "oci-layout", *(out / "blobs" / "sha256").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        if path.parent.name == "sha256":
            assert sha256(path.read_bytes()).split(":")[1] == path.name
    assert not [p for p in files_under(out) if ".tmp-" in p]


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_archives_round_trip(tmp_path: Path, transport: str) -> None:
    src = make_source(tmp_path / "src")
    dest = tmp_path / "img.tar"
    tag = "t" if transport == "oci-archive" else "example.org/team/app"
    with open_image(src) as image:
        result = write_image(image.tree, image.config, split_specs(image.tree),
                             f"{transport}:{dest}:{tag}", WriteOptions(compression="zstd"))
        with open_image(f"{transport}:{dest}") as back:
            assert compare(image.tree, back.tree) == []
            assert summary(back.tree) == summary(image.tree)
            assert back.config["config"]["Entrypoint"] == CONFIG["config"]["Entrypoint"]
    with tarfile.open(dest) as tf:
        names = tf.getnames()
        if transport == "docker-archive":
            manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
            assert manifest[0]["RepoTags"] == ["example.org/team/app:latest"]
            assert set(manifest[0]["Layers"]) <= set(names)
            assert [f"blobs/sha256/{lay.digest.split(':')[1]}" for lay in result.layers] == (
                manifest[0]["Layers"]
            )
            config = json.load(tf.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
            assert config["rootfs"]["diff_ids"] == [lay.diff_id for lay in result.layers]
        else:
            index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
            assert index["manifests"][0]["digest"] == result.manifest_digest
            assert index["manifests"][0]["annotations"] == {
                "org.opencontainers.image.ref.name": "t"
            }
            assert "oci-layout" in names
    assert [p.name for p in tmp_path.iterdir() if p.name != "src"] == ["img.tar"]


def test_reproducible_across_runs_paths_and_jobs(tmp_path: Path) -> None:
    digests = set()
    archives = set()
    for n, jobs in enumerate((1, 3)):
        src = make_source(tmp_path / f"copy{n}" / "deep" / "src")
        with open_image(src) as image:
            for compression in ("gzip", "zstd"):
                result = write_image(
                    image.tree, image.config, split_specs(image.tree),
                    f"oci:{tmp_path}/out{n}-{compression}:t",
                    WriteOptions(compression=compression, jobs=jobs,
                                 source_date_epoch=SDE),
                )
                digests.add((compression, result.manifest_digest))
            write_image(image.tree, image.config, split_specs(image.tree),
                        f"oci-archive:{tmp_path}/a{n}.tar:t")
            archives.add(sha256((tmp_path / f"a{n}.tar").read_bytes()))
    assert len(digests) == 2  # one per compression, the same from both copies
    assert len(archives) == 1


def test_reuse_copies_the_existing_blob(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    with open_image(src) as image:
        specs = split_specs(image.tree)
        target = specs[2]
        # A blob of that layer's tar made by "another compressor" (level 1).
        raw = io.BytesIO()
        write_layer(image.tree, target.paths, raw)
        tar = raw.getvalue()
        other = io.BytesIO()
        c = compressor("gzip", 1, other)
        c.write(tar)
        c.close()
        blob_path = tmp_path / "old-blob"
        blob_path.write_bytes(other.getvalue())
        old = ReusableBlob(str(blob_path), sha256(other.getvalue()), len(other.getvalue()),
                           LAYER_MEDIA_TYPES["gzip"])
        fresh = write_image(image.tree, image.config, specs, f"oci:{tmp_path}/fresh:t")
        reused = write_image(image.tree, image.config, specs, f"oci:{tmp_path}/reused:t",
                             WriteOptions(reuse={sha256(tar): old}))
        assert fresh.layers[2].digest != old.digest
        assert reused.layers[2].digest == old.digest and reused.layers[2].reused
        assert [lay.reused for lay in reused.layers].count(True) == 1
        assert blob(tmp_path / "reused", old.digest) == other.getvalue()
        assert reused.layers[2].diff_id == fresh.layers[2].diff_id
        # Other compression: not reused. A blob that lies about its digest: not reused.
        zstd = write_image(image.tree, image.config, specs, f"oci:{tmp_path}/z:t",
                           WriteOptions(compression="zstd", reuse={sha256(tar): old}))
        assert not any(lay.reused for lay in zstd.layers)
        blob_path.write_bytes(b"corrupt" + other.getvalue()[7:])
        lied = write_image(image.tree, image.config, specs, f"oci:{tmp_path}/lied:t",
                           WriteOptions(reuse={sha256(tar): old}))
        assert lied.manifest_digest == fresh.manifest_digest
        assert not any(lay.reused for lay in lied.layers)
        with open_image(f"oci:{tmp_path}/reused:t") as back:
            assert compare(image.tree, back.tree) == []
    assert not [p for p in files_under(tmp_path / "lied") if ".tmp-" in p]


def test_empty_plan_for_empty_tree(tmp_path: Path) -> None:
    from pkgchunk.tree import FileTree

    result = write_image(FileTree({}), {"architecture": "amd64", "os": "linux"}, [],
                         f"oci:{tmp_path}/e:t")
    assert result.layers == ()
    manifest = layout_json(tmp_path / "e", result.manifest_digest)
    assert manifest["layers"] == []
    assert os.path.exists(tmp_path / "e" / "index.json")
