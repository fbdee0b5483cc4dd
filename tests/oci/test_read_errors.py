"""Every way an input image can be broken gives one InputError line naming file and problem."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pkgchunk.errors import InputError
from pkgchunk.io import open_image
from pkgchunk.oci.platform import host_arch
from tests.imagebuild import (
    OCI_INDEX,
    OCI_MANIFEST,
    Built,
    Layer,
    blob_file,
    build_image,
    build_index,
    digest_of,
    file,
    hardlink,
    tar_bytes,
    write_docker_archive,
    write_layout,
    write_oci_archive,
)


def error(ref: str) -> str:
    with pytest.raises(InputError) as err, open_image(ref):
        pass
    return str(err.value)


def simple(**kw: Any) -> Built:
    return build_image([[file("a", b"a" * 5000)], [file("b", b"b")]], **kw)


def layout_with(tmp_path: Path, built: Built | None = None) -> tuple[Path, Built]:
    built = built or simple()
    return write_layout(tmp_path / "img", {"t": built}), built


def put_blob(layout: Path, data: bytes, media_type: str = OCI_MANIFEST) -> dict[str, Any]:
    digest = digest_of(data)
    blob_file(layout, digest).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def set_index(layout: Path, descs: list[dict[str, Any]]) -> None:
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs}
    (layout / "index.json").write_text(json.dumps(doc))


def manifest_with(layout: Path, built: Built, **changes: Any) -> None:
    doc = json.loads(built.blobs[built.digest])
    doc.update(changes)
    set_index(layout, [put_blob(layout, json.dumps(doc).encode())])


# --- layout structure ----------------------------------------------------------------


def test_missing_index_json(tmp_path: Path) -> None:
    layout, _ = layout_with(tmp_path)
    os.unlink(layout / "index.json")
    assert error(f"oci:{layout}") == f"oci:{layout}: index.json is missing"


def test_missing_oci_layout_file(tmp_path: Path) -> None:
    layout, _ = layout_with(tmp_path)
    os.unlink(layout / "oci-layout")
    assert error(f"oci:{layout}") == f"oci:{layout}: oci-layout is missing"


def test_oci_path_not_a_directory(tmp_path: Path) -> None:
    missing = f"{tmp_path}/none"
    assert error(f"oci:{missing}") == f"oci:{missing}: {missing} is not a directory"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "malformed index.json: Expecting property name"),
        ("[1, 2]", "malformed index.json: not a JSON object"),
        ('{"manifests": {}}', "malformed index.json: 'manifests' is not a list of descriptors"),
        ('{"manifests": []}', "index.json lists no images"),
    ],
)
def test_malformed_index_json(tmp_path: Path, text: str, problem: str) -> None:
    layout, _ = layout_with(tmp_path)
    (layout / "index.json").write_text(text)
    assert error(f"oci:{layout}").startswith(f"oci:{layout}: {problem}")


def test_malformed_oci_layout_file(tmp_path: Path) -> None:
    layout, _ = layout_with(tmp_path)
    (layout / "oci-layout").write_text("{}")
    assert error(f"oci:{layout}") == f"oci:{layout}: malformed oci-layout: no imageLayoutVersion"


# --- tags ------------------------------------------------------------------------------


def test_several_images_without_tag_lists_tags(tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "img", {"b": simple(), "a": build_image([[file("x")]])})
    assert error(f"oci:{layout}") == (
        f"oci:{layout}: holds 2 images; name one with :TAG (tags: a, b)"
    )


def test_tag_not_found_lists_tags(tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "img", {"v1": simple(), "v2": build_image([[file("x")]])})
    assert error(f"oci:{layout}:v3") == f"oci:{layout}:v3: tag 'v3' not found (tags: v1, v2)"


def test_no_image_for_this_platform(tmp_path: Path) -> None:
    archs = [a for a in ("riscv64", "s390x", "ppc64le") if a != host_arch()][:2]
    index = build_index([build_image([[file("x")]], arch=a) for a in archs])
    layout, _ = layout_with(tmp_path, index)
    assert error(f"oci:{layout}") == (
        f"oci:{layout}: no linux/{host_arch()} image in the index"
        f" (found: {', '.join(sorted('linux/' + a for a in archs))})"
    )


def test_nesting_too_deep(tmp_path: Path) -> None:
    built: Built = simple()
    for _ in range(10):
        built = build_index([built])
    layout, _ = layout_with(tmp_path, built)
    assert error(f"oci:{layout}") == f"oci:{layout}: image indexes nested more than 8 deep"


# --- blobs -----------------------------------------------------------------------------


def test_missing_manifest_blob(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    os.unlink(blob_file(layout, built.digest))
    assert error(f"oci:{layout}") == f"oci:{layout}: blob {built.digest} is missing"


def test_manifest_digest_mismatch(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    path = blob_file(layout, built.digest)
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion":3'))
    assert error(f"oci:{layout}") == f"oci:{layout}: blob {built.digest} digest mismatch"


def test_malformed_manifest(tmp_path: Path) -> None:
    layout, _ = layout_with(tmp_path)
    desc = put_blob(layout, b"{broken")
    set_index(layout, [desc])
    assert error(f"oci:{layout}").startswith(
        f"oci:{layout}: malformed manifest {desc['digest']}: Expecting property name"
    )


def test_manifest_without_layers(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    manifest_with(layout, built, layers="nope")
    assert "no layers list" in error(f"oci:{layout}")


def test_invalid_digest_is_not_a_path(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    doc = json.loads(built.blobs[built.digest])
    doc["layers"][0]["digest"] = "sha256:../../../../etc/passwd"
    set_index(layout, [put_blob(layout, json.dumps(doc).encode())])
    assert error(f"oci:{layout}") == (
        f"oci:{layout}: invalid digest 'sha256:../../../../etc/passwd'"
    )


def test_missing_config(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    os.unlink(blob_file(layout, built.config_digest))
    assert error(f"oci:{layout}") == f"oci:{layout}: blob {built.config_digest} is missing"


def test_config_digest_mismatch(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    blob_file(layout, built.config_digest).write_bytes(b'{"os":"other"}')
    assert error(f"oci:{layout}").startswith(f"oci:{layout}: blob {built.config_digest} ")


def test_malformed_config(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    desc = put_blob(layout, b"[]", "application/vnd.oci.image.config.v1+json")
    manifest_with(layout, built, config=desc)
    assert error(f"oci:{layout}") == (
        f"oci:{layout}: malformed config {desc['digest']}: not a JSON object"
    )


def test_missing_layer_blob(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    os.unlink(blob_file(layout, built.layer_digests[1]))
    assert error(f"oci:{layout}") == f"oci:{layout}: blob {built.layer_digests[1]} is missing"


def test_layer_digest_mismatch(tmp_path: Path) -> None:
    """A layer that still decompresses fine but is not the blob the manifest names."""
    layout, built = layout_with(tmp_path)
    other = gzip.compress(tar_bytes([file("b", b"B")]), mtime=0)
    blob_file(layout, built.layer_digests[1]).write_bytes(other)
    assert error(f"oci:{layout}") == (
        f"oci:{layout}: blob {built.layer_digests[1]} digest mismatch"
    )


def test_layer_size_mismatch(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    doc = json.loads(built.blobs[built.digest])
    doc["layers"][0]["size"] += 1
    set_index(layout, [put_blob(layout, json.dumps(doc).encode())])
    assert error(f"oci:{layout}").startswith(
        f"oci:{layout}: blob {built.layer_digests[0]} has "
    )


def corrupt_layer(tmp_path: Path, compression: str, mutate: Any) -> tuple[str, str]:
    """A layout whose first layer blob is ``mutate(blob)``, with digests made consistent,
    so only the compressed stream itself is wrong."""
    built = build_image([Layer([file("a", os.urandom(3000))], compression=compression)])
    blob = mutate(built.blobs[built.layer_digests[0]])
    layout = tmp_path / "img"
    layout.mkdir()
    write_layout(layout, {"t": built})
    doc = json.loads(built.blobs[built.digest])
    doc["layers"][0].update(put_blob(layout, blob, doc["layers"][0]["mediaType"]))
    set_index(layout, [put_blob(layout, json.dumps(doc).encode())])
    return f"oci:{layout}", doc["layers"][0]["digest"]


@pytest.mark.parametrize(
    ("compression", "mutate", "problem"),
    [
        ("gzip", lambda b: b[:-10], "truncated gzip data"),
        ("gzip", lambda b: b[:20], "truncated gzip data"),
        ("gzip", lambda b: b[:10] + bytes(x ^ 0x55 for x in b[10:40]) + b[40:], "corrupt gzip"),
        ("gzip", lambda b: b + b"trailing junk", "corrupt gzip data"),
        ("zstd", lambda b: b[:-3], "truncated zstd data"),
        ("zstd", lambda b: b[:len(b) // 2], "truncated zstd data"),
        ("zstd", lambda b: b[:30] + bytes(x ^ 0x55 for x in b[30:60]) + b[60:], "zstd data"),
        ("zstd", lambda b: b + b"junkjunk", "corrupt zstd data: bad frame magic"),
    ],
)
def test_broken_compressed_layer(
    tmp_path: Path, compression: str, mutate: Any, problem: str
) -> None:
    ref, digest = corrupt_layer(tmp_path, compression, mutate)
    msg = error(ref)
    assert msg.startswith(f"{ref}: layer 1 ({digest}): "), msg
    assert problem in msg, msg


def test_gzip_zero_padding_is_accepted(tmp_path: Path) -> None:
    ref, _ = corrupt_layer(tmp_path, "gzip", lambda b: b + b"\0" * 1000)
    with open_image(ref) as image:
        assert image.tree.entries["a"].size == 3000


def test_multi_member_gzip(tmp_path: Path) -> None:
    def two_members(blob: bytes) -> bytes:
        tar = gzip.decompress(blob)
        return gzip.compress(tar[:1000], mtime=0) + gzip.compress(tar[1000:], mtime=0)

    ref, _ = corrupt_layer(tmp_path, "gzip", two_members)
    with open_image(ref) as image:
        assert image.tree.entries["a"].size == 3000


def test_zstd_skippable_and_multiple_frames(tmp_path: Path) -> None:
    def frames(blob: bytes) -> bytes:
        tar = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        c = zstandard.ZstdCompressor(write_checksum=True)
        skip = (0x184D2A5E).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
        return skip + c.compress(tar[:2048]) + skip + c.compress(tar[2048:])

    ref, _ = corrupt_layer(tmp_path, "zstd", frames)
    with open_image(ref) as image:
        assert image.tree.entries["a"].size == 3000


def test_diff_id_mismatch(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    cfg = json.loads(built.blobs[built.config_digest])
    cfg["rootfs"]["diff_ids"][1] = "sha256:" + "1" * 64
    desc = put_blob(layout, json.dumps(cfg).encode(), "application/vnd.oci.image.config.v1+json")
    manifest_with(layout, built, config=desc)
    assert error(f"oci:{layout}") == (
        f"oci:{layout}: layer 2 ({built.layer_digests[1]}) has diff_id {built.diff_ids[1]},"
        f" the config says sha256:{'1' * 64}"
    )


def test_diff_id_count_mismatch(tmp_path: Path) -> None:
    layout, built = layout_with(tmp_path)
    cfg = json.loads(built.blobs[built.config_digest])
    cfg["rootfs"]["diff_ids"].pop()
    desc = put_blob(layout, json.dumps(cfg).encode(), "application/vnd.oci.image.config.v1+json")
    manifest_with(layout, built, config=desc)
    assert error(f"oci:{layout}") == (
        f"oci:{layout}: config lists 1 diff_ids but the manifest has 2 layers"
    )


# --- hostile layer contents, through a whole image ------------------------------------


def test_member_escaping_root_names_layer_and_member(tmp_path: Path) -> None:
    built = build_image([[file("ok")], [file("../../etc/shadow", b"x")]])
    layout, _ = layout_with(tmp_path, built)
    assert error(f"oci:{layout}:t") == (
        f"oci:{layout}:t: layer 2 ({built.layer_digests[1]}):"
        " member '../../etc/shadow' escapes the image root"
    )


def test_hardlink_to_missing_names_layer_and_member(tmp_path: Path) -> None:
    built = build_image([[file("ok")], [hardlink("usr/bin/x", "usr/bin/gone")]])
    layout, _ = layout_with(tmp_path, built)
    assert error(f"oci:{layout}") == (
        f"oci:{layout}: layer 2 ({built.layer_digests[1]}):"
        " member 'usr/bin/x' is a hardlink to missing path 'usr/bin/gone'"
    )


# --- archives --------------------------------------------------------------------------


def hostile_archive(path: Path, infos: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in infos:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_oci_archive_member_escaping(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    archive = hostile_archive(tmp_path / "a.tar", [(tarfile.TarInfo("../victim"), b"pwned")])
    assert error(f"oci-archive:{archive}") == (
        f"oci-archive:{archive}: member '../victim' escapes the archive root"
    )
    assert not victim.exists()


def test_oci_archive_symlink_never_followed(tmp_path: Path) -> None:
    """A symlink member pointing out, then a file written 'through' it, lands inside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    link = tarfile.TarInfo("blobs")
    link.type = tarfile.SYMTYPE
    link.linkname = str(outside)
    archive = hostile_archive(
        tmp_path / "a.tar", [(link, b""), (tarfile.TarInfo("blobs/sha256/x"), b"data")]
    )
    assert error(f"oci-archive:{archive}") == (
        f"oci-archive:{archive}: member 'blobs' links outside the archive"
    )
    assert list(outside.iterdir()) == []


def test_oci_archive_relative_symlink_out_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("index.json")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../etc/passwd"
    archive = hostile_archive(tmp_path / "a.tar", [(link, b"")])
    assert error(f"oci-archive:{archive}") == (
        f"oci-archive:{archive}: member 'index.json' links outside the archive"
    )


def test_archive_missing_or_garbage(tmp_path: Path) -> None:
    assert error(f"oci-archive:{tmp_path}/no.tar") == (
        f"oci-archive:{tmp_path}/no.tar: {tmp_path}/no.tar does not exist"
    )
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not an archive" * 100)
    assert error(f"oci-archive:{junk}").startswith(f"oci-archive:{junk}: corrupt archive: ")


def test_oci_archive_digest_mismatch(tmp_path: Path) -> None:
    built = simple()
    built.blobs[built.layer_digests[0]] = gzip.compress(tar_bytes([file("evil")]), mtime=0)
    archive = write_oci_archive(tmp_path / "a.tar", tmp_path / "w", {"t": built})
    assert error(f"oci-archive:{archive}") == (
        f"oci-archive:{archive}: blob {built.layer_digests[0]} digest mismatch"
    )


def test_oci_archive_index_missing(tmp_path: Path) -> None:
    marker = b'{"imageLayoutVersion":"1.0.0"}'
    archive = hostile_archive(tmp_path / "a.tar", [(tarfile.TarInfo("oci-layout"), marker)])
    assert error(f"oci-archive:{archive}") == f"oci-archive:{archive}: index.json is missing"


def test_docker_archive_several_images_without_tag(tmp_path: Path) -> None:
    archive = write_docker_archive(
        tmp_path / "d.tar", [(["a:1", "a:latest"], simple()), ([], build_image([[file("x")]]))]
    )
    assert error(f"docker-archive:{archive}") == (
        f"docker-archive:{archive}: holds 2 images; name one with :NAME:TAG or :@N"
        " (tags: a:1, a:latest, @1)"
    )
    assert error(f"docker-archive:{archive}:b:2") == (
        f"docker-archive:{archive}:b:2: tag 'b:2' not found (tags: a:1, a:latest, @1)"
    )
    assert error(f"docker-archive:{archive}:@5") == (
        f"docker-archive:{archive}:@5: no image @5 (the archive holds 2)"
    )


def test_docker_archive_manifest_problems(tmp_path: Path) -> None:
    no_manifest = hostile_archive(tmp_path / "a.tar", [(tarfile.TarInfo("x.json"), b"{}")])
    assert error(f"docker-archive:{no_manifest}") == (
        f"docker-archive:{no_manifest}: manifest.json 'manifest.json' is missing from the archive"
    )
    bad = hostile_archive(tmp_path / "b.tar", [(tarfile.TarInfo("manifest.json"), b"{}")])
    assert error(f"docker-archive:{bad}") == (
        f"docker-archive:{bad}: malformed manifest.json: not a list of images"
    )
    entry = [{"Config": "c.json", "Layers": ["l/layer.tar"]}]
    no_layer = hostile_archive(
        tmp_path / "c.tar",
        [(tarfile.TarInfo("manifest.json"), json.dumps(entry).encode()),
         (tarfile.TarInfo("c.json"), b'{"os":"linux"}')],
    )  # fmt: skip
    assert error(f"docker-archive:{no_layer}") == (
        f"docker-archive:{no_layer}: layer 'l/layer.tar' is missing from the archive"
    )


def test_docker_archive_config_digest_mismatch(tmp_path: Path) -> None:
    built = simple()
    built.blobs[built.config_digest] = b'{"architecture":"amd64","os":"tampered"}'
    archive = write_docker_archive(tmp_path / "d.tar", [(["x:1"], built)], legacy=False)
    assert error(f"docker-archive:{archive}") == (
        f"docker-archive:{archive}: blob {built.config_digest} digest mismatch"
    )


def test_docker_archive_layer_diff_id_mismatch(tmp_path: Path) -> None:
    built = simple()
    # swap layer 2's content: the config's diff_ids no longer describe it
    other = gzip.compress(tar_bytes([file("b", b"tampered")]), mtime=0)
    built.blobs[built.layer_digests[1]] = other
    archive = write_docker_archive(tmp_path / "d.tar", [(["x:1"], built)])
    msg = error(f"docker-archive:{archive}")
    assert msg.startswith(f"docker-archive:{archive}: layer 2 (sha256:")
    assert msg.endswith(f" the config says {built.diff_ids[1]}")


def test_archive_huge_extended_header(tmp_path: Path) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 1 << 32
    archive = tmp_path / "a.tar"
    archive.write_bytes(info.tobuf(format=tarfile.USTAR_FORMAT) + b"\0" * 1024)
    assert error(f"oci-archive:{archive}") == (
        f"oci-archive:{archive}: 4294967296-byte extended header at offset 0"
    )
