"""Fuzzing the OCI documents: index.json, a nested index, the manifest, the config and the
docker-archive manifest.json, each with one value replaced by arbitrary JSON (and the
digests around it made consistent again, so the parser itself is what is exercised).
Reading gives one InputError line naming the reference, or an image.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pkgchunk.errors import InputError
from pkgchunk.io import open_image
from tests.hostile.crafted import fuzz_settings, within
from tests.imagebuild import (
    OCI_INDEX,
    Layer,
    blob_file,
    build_image,
    build_index,
    digest_of,
    file,
    write_docker_archive,
    write_layout,
)

SPECIAL: list[Any] = [
    None, True, -1, 0, 2**70, 1.5, "", "sha256:" + "0" * 64, "sha256:../../../etc/passwd",
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "../../../../etc/passwd", "linux", "amd64", [], {},
]
json_values = st.recursive(
    st.sampled_from(SPECIAL) | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["mediaType", "digest", "size", "manifests", "layers", "config",
                         "platform", "annotations", "rootfs", "diff_ids", "os", "x"]),
        inner, max_size=4),
    max_leaves=8,
)
#: Where in a document to put the value: a path of keys/indexes (followed while it exists).
paths = st.lists(st.sampled_from(["manifests", "layers", "config", "rootfs", "diff_ids",
                                  "platform", "annotations", "digest", "size", "mediaType",
                                  0, 1, "new"]), min_size=1, max_size=4)


def put(doc: Any, path: list[str | int], value: Any, delete: bool) -> Any:
    """``doc`` with the value at ``path`` (as far as it exists) replaced or deleted."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(doc, dict) and isinstance(key, str):
        out = dict(doc)
        if key in doc and rest:
            out[key] = put(doc[key], rest, value, delete)
        elif delete:
            out.pop(key, None)
        else:
            out[key] = value
        return out
    if isinstance(doc, list) and isinstance(key, int) and key < len(doc):
        out_list = list(doc)
        out_list[key] = put(doc[key], rest, value, delete) if rest or not delete else None
        return out_list
    return value


def store(layout: Path, doc: Any) -> tuple[str, int]:
    data = json.dumps(doc).encode()
    blob_file(layout, digest_of(data)).write_bytes(data)
    return digest_of(data), len(data)


def check(ref: str) -> None:
    try:
        with within(20), open_image(ref) as image:
            assert image.tree is not None
    except InputError as err:
        msg = str(err)
        assert msg.startswith(ref.rsplit(":", 1)[0]) and "\n" not in msg, msg


BASE = build_image([[file("a", b"a")], Layer([file("b", b"b")], compression="zstd")])
INDEX = build_index([BASE])


@fuzz_settings(150)
@given(st.sampled_from(["index.json", "nested index", "manifest", "config"]), paths, json_values,
       st.booleans())
def test_one_value_replaced(
    target: str, path: list[str | int], value: Any, delete: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        layout = write_layout(Path(tmp) / "img", {"t": INDEX})
        index = json.loads((layout / "index.json").read_bytes())
        nested = json.loads(INDEX.blobs[INDEX.digest])
        manifest = json.loads(BASE.blobs[BASE.digest])
        config = json.loads(BASE.blobs[BASE.config_digest])
        if target == "config":
            config = put(config, path, value, delete)
        elif target == "manifest":
            manifest = put(manifest, path, value, delete)
        elif target == "nested index":
            nested = put(nested, path, value, delete)
        # re-address each changed document from the bottom up
        if target == "config" and isinstance(manifest.get("config"), dict):
            manifest["config"]["digest"], manifest["config"]["size"] = store(layout, config)
        if target in ("config", "manifest") and isinstance(nested, dict):
            descs = nested.get("manifests")
            if isinstance(descs, list) and descs and isinstance(descs[0], dict):
                descs[0]["digest"], descs[0]["size"] = store(layout, manifest)
        if target != "index.json":
            digest, size = store(layout, nested)
            index["manifests"][0].update({"digest": digest, "size": size})
        else:
            index = put(index, path, value, delete)
        (layout / "index.json").write_text(json.dumps(index))
        check(f"oci:{layout}:t")


@fuzz_settings(100)
@given(paths.map(lambda p: [0, *p]), json_values, st.booleans())
def test_docker_manifest_json(path: list[str | int], value: Any, delete: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = write_docker_archive(Path(tmp) / "d.tar", [(["x:1"], BASE)], legacy=False)
        with tarfile.open(archive) as tf:
            member = tf.extractfile("manifest.json")
            assert member is not None
            doc = json.loads(member.read())
            infos = [(i, tf.extractfile(i).read() if i.isreg() else b"")  # type: ignore[union-attr]
                     for i in tf.getmembers()]
        key = path[1] if len(path) > 1 else "x"
        mapped = [0, {"layers": "Layers", "config": "Config"}.get(str(key), key), *path[2:]]
        doc = put(doc, mapped, value, delete)
        data = json.dumps(doc).encode()
        out = Path(tmp) / "fuzzed.tar"
        with tarfile.open(out, "w") as tf:
            for info, content in infos:
                if info.name == "manifest.json":
                    content = data
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content) if info.isreg() else None)
        check(f"docker-archive:{out}")


def test_index_json_platform_and_tag_junk() -> None:
    """A few shapes the generator rarely reaches: several untagged images with junk
    platforms, a tag that is not a string, annotations that are not a mapping."""
    with tempfile.TemporaryDirectory() as tmp:
        layout = write_layout(Path(tmp) / "img", {"t": BASE})
        desc = json.loads((layout / "index.json").read_bytes())["manifests"][0]
        junk_platforms: list[Any] = [[], "linux", {"os": 1}, {"architecture": 0}]
        shapes: list[list[Any]] = [
            [{**desc, "platform": p} for p in junk_platforms],
            [{**desc, "annotations": {"org.opencontainers.image.ref.name": 5}}],
            [{**desc, "annotations": []}],
        ]
        for manifests in shapes:
            (layout / "index.json").write_text(
                json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
            )
            check(f"oci:{layout}")
