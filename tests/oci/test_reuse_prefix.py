"""The writer skips the diff_id pass only for layers that cannot be a reusable blob."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

import pkgchunk.oci.write as write_mod
from pkgchunk.io import open_image
from pkgchunk.oci import reuse
from pkgchunk.oci.compress import LAYER_MEDIA_TYPES, HashingSink
from pkgchunk.oci.tarwrite import write_layer
from pkgchunk.oci.write import ReusableBlob, WriteOptions, write_image
from tests.helpers import require_tool
from tests.oci.writecases import make_source, sha256, split_specs


def _tar(size: int) -> bytes:
    """A tar of one file of ``size`` bytes (tarfile's GNU format, not pkgchunk's writer)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("f")
        info.size = size
        tf.addfile(info, io.BytesIO(bytes(range(256)) * (size // 256) + b"x" * (size % 256)))
    return raw.getvalue()


@pytest.mark.parametrize("size", [10, reuse.PREFIX - 700, 5 * reuse.PREFIX])
def test_blob_keys_see_through_every_encoding(tmp_path: Path, size: int) -> None:
    tar = _tar(size)
    half = len(tar) // 2
    z = zstandard.ZstdCompressor()
    encodings = {
        "tar": tar,
        "gzip": gzip.compress(tar, mtime=0),
        # several members / frames, as pigz --independent, estargz and zstd:chunked write
        "gzip-members": gzip.compress(tar[:half], mtime=0) + gzip.compress(tar[half:], mtime=0),
        "zstd-frames": z.compress(tar[:100]) + z.compress(tar[100:]),
    }
    for name, data in encodings.items():
        (tmp_path / name).write_bytes(data)
    keys = reuse.blob_keys(str(tmp_path / name) for name in encodings)
    assert keys == {reuse.key(tar)}
    other = _tar(size + 1)
    assert reuse.key(other) != reuse.key(tar)


def test_pigz_blob_has_the_key_of_its_tar(tmp_path: Path) -> None:
    pigz = require_tool("pigz")
    tar = _tar(3 * reuse.PREFIX)
    (tmp_path / "t.tar").write_bytes(tar)
    subprocess.run([pigz, "-k", "-p2", str(tmp_path / "t.tar")], check=True)
    assert reuse.blob_keys([str(tmp_path / "t.tar.gz")]) == {reuse.key(tar)}


def test_unreadable_blob_means_unknown(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_bytes(gzip.compress(_tar(10)))
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 100)  # gzip magic, then garbage
    assert reuse.blob_keys([str(good), str(bad)]) is None
    assert reuse.blob_keys([str(good), str(tmp_path / "missing")]) is None
    assert reuse.blob_keys([]) == set()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # a hostile previous layout: opening it must not block
    assert reuse.blob_keys([str(good), str(fifo)]) is None


def _count_hash_passes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each full diff_id pass (a write_layer into a HashingSink with no output)."""
    seen: list[str] = []
    real = write_mod.write_layer  # type: ignore[attr-defined]

    def spy(tree, paths, out, **kw):  # type: ignore[no-untyped-def]
        if isinstance(out, HashingSink) and out._out is None:
            seen.append(next(iter(paths), ""))
        return real(tree, paths, out, **kw)

    monkeypatch.setattr(write_mod, "write_layer", spy)
    return seen


def test_hash_pass_only_where_a_blob_could_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_source(tmp_path / "src")
    with open_image(src) as image:
        specs = split_specs(image.tree)
        assert len(specs) >= 3
        raw = io.BytesIO()
        write_layer(image.tree, specs[1].paths, raw)
        tar = raw.getvalue()
        blob_path = tmp_path / "old-blob"
        blob_path.write_bytes(gzip.compress(tar, compresslevel=1, mtime=0))
        old = ReusableBlob(str(blob_path), sha256(blob_path.read_bytes()),
                           blob_path.stat().st_size, LAYER_MEDIA_TYPES["gzip"])
        unrelated = tmp_path / "unrelated"
        unrelated.write_bytes(gzip.compress(_tar(1000), mtime=0))
        other = ReusableBlob(str(unrelated), sha256(unrelated.read_bytes()),
                             unrelated.stat().st_size, LAYER_MEDIA_TYPES["gzip"])
        plain = write_image(image.tree, image.config, specs, f"oci:{tmp_path}/plain:t")

        passes = _count_hash_passes(monkeypatch)
        result = write_image(image.tree, image.config, specs, f"oci:{tmp_path}/a:t",
                             WriteOptions(reuse={"sha256:" + "0" * 64: other}))
        assert passes == []  # no layer starts like the unrelated blob: compressed at once
        assert result.manifest_digest == plain.manifest_digest

        result = write_image(image.tree, image.config, specs, f"oci:{tmp_path}/b:t",
                             WriteOptions(reuse={sha256(tar): old, "sha256:" + "1" * 64: other}))
        assert passes == [specs[1].paths[0]]  # only the layer that starts like the old blob
        assert [lay.reused for lay in result.layers] == [i == 1 for i in range(len(specs))]
        assert result.layers[1].digest == old.digest

        passes.clear()
        unrelated.write_bytes(b"\x1f\x8b\x08\x00garbage")  # unreadable: hash every layer
        result = write_image(image.tree, image.config, specs, f"oci:{tmp_path}/c:t",
                             WriteOptions(reuse={sha256(tar): old, "sha256:" + "1" * 64: other}))
        assert len(passes) == len(specs)
        assert [lay.reused for lay in result.layers] == [i == 1 for i in range(len(specs))]
