"""A destination that cannot be written leaves nothing behind and changes no existing tag."""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import pkgchunk.oci.write as write_mod
from pkgchunk.cli import cli
from pkgchunk.errors import OutputError, PkgchunkError, ToolMissingError
from pkgchunk.image import Image
from pkgchunk.io import open_image, write_image
from pkgchunk.oci.mediatypes import OCI_CONFIG, OCI_MANIFEST
from pkgchunk.oci.store import (
    BlobStore,
    add_to_index,
    canonical_json,
    referenced,
)
from pkgchunk.oci.write import WriteOptions
from pkgchunk.verify import compare
from tests.imagebuild import build_image, build_index, write_layout
from tests.imagebuild import file as tfile
from tests.oci.writecases import files_under, make_source, split_specs


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Image]:
    with open_image(make_source(tmp_path / "src")) as img:
        yield img


def write(image: Image, dest: str, **kw: Any) -> Any:
    return write_image(image.tree, image.config, split_specs(image.tree), dest, WriteOptions(**kw))


def snapshot(root: Path) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for p in sorted(files_under(root))}


def fail_during_layer(monkeypatch: pytest.MonkeyPatch, nth: int, exc: BaseException) -> None:
    """Make the nth layer write fail halfway through its tar."""
    real = write_mod.write_layer  # type: ignore[attr-defined]
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(tree: Any, paths: Any, out: Any, **kw: Any) -> int:
        with lock:
            calls["n"] += 1
            mine = calls["n"]
        if mine == nth:
            out.write(b"\0" * 4096)
            raise exc
        return real(tree, paths, out, **kw)

    monkeypatch.setattr(write_mod, "write_layer", flaky)


def test_parent_is_a_regular_file(tmp_path: Path, image: Image) -> None:
    (tmp_path / "plain").write_text("x")
    for dest in (f"oci:{tmp_path}/plain/out:t", f"oci-archive:{tmp_path}/plain/o.tar",
                 f"docker-archive:{tmp_path}/plain/o.tar"):
        with pytest.raises(OutputError) as err:
            write(image, dest)
        msg = str(err.value)
        assert msg.startswith(dest.rsplit(":t", 1)[0]) and "\n" not in msg
    assert (tmp_path / "plain").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "src"]


@pytest.mark.parametrize(
    "exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
def test_failure_mid_write_keeps_existing_layout(
    tmp_path: Path, image: Image, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    out = tmp_path / "out"
    write(image, f"oci:{out}:keep")
    write(image, f"oci:{out}:other", compression="zstd")
    before = snapshot(out)
    fail_during_layer(monkeypatch, 3, exc)
    with pytest.raises(OutputError if isinstance(exc, OSError) else KeyboardInterrupt) as err:
        write(image, f"oci:{out}:keep", compression="none", jobs=2)
    if isinstance(exc, OSError):
        assert "No space left on device" in str(err.value)
    assert snapshot(out) == before
    monkeypatch.undo()
    with open_image(f"oci:{out}:keep") as back:
        assert compare(image.tree, back.tree) == []


def test_failure_in_new_layout_removes_what_it_created(
    tmp_path: Path, image: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_during_layer(monkeypatch, 2, OSError(errno.EIO, "Input/output error"))
    with pytest.raises(OutputError, match="Input/output error"):
        write(image, f"oci:{tmp_path}/new/deeper/out:t")
    assert not (tmp_path / "new").exists()


def test_failure_at_index_update_takes_blobs_back(
    tmp_path: Path, image: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    write(image, f"oci:{out}:keep", compression="zstd")
    before = snapshot(out)

    def broken(*args: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(out / "index.json"))

    monkeypatch.setattr(write_mod, "add_to_index", broken)
    with pytest.raises(OutputError, match=r"index\.json: Read-only file system"):
        write(image, f"oci:{out}:new")
    assert snapshot(out) == before


def test_corrupt_index_or_foreign_directory_is_refused(tmp_path: Path, image: Image) -> None:
    out = tmp_path / "out"
    write(image, f"oci:{out}:keep")
    (out / "index.json").write_text("{not json")
    before = snapshot(out)
    with pytest.raises(OutputError, match=r"index\.json: not valid JSON"):
        write(image, f"oci:{out}:new", compression="zstd")
    assert snapshot(out) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data").write_text("mine")
    with pytest.raises(OutputError, match="not empty and has no oci-layout"):
        write(image, f"oci:{foreign}:t")
    assert snapshot(foreign) == {"data": b"mine"}


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_archive_failure_keeps_old_archive(
    tmp_path: Path, image: Image, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    dest = tmp_path / "out" / "img.tar"
    dest.parent.mkdir()
    write(image, f"{transport}:{dest}")
    old = dest.read_bytes()
    fail_during_layer(monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OutputError):
        write(image, f"{transport}:{dest}", compression="zstd")
    assert dest.read_bytes() == old
    assert [p.name for p in dest.parent.iterdir()] == ["img.tar"]
    monkeypatch.undo()

    def broken_pack(*args: Any) -> None:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(write_mod, "pack", broken_pack)
    with pytest.raises(OutputError, match="Disk quota exceeded"):
        write(image, f"{transport}:{dest}", compression="zstd")
    assert dest.read_bytes() == old
    assert [p.name for p in dest.parent.iterdir()] == ["img.tar"]


def test_archive_dest_that_is_a_directory(tmp_path: Path, image: Image) -> None:
    with pytest.raises(OutputError, match="is a directory"):
        write(image, f"oci-archive:{tmp_path}")


def test_unwritable_transports_and_bad_names(
    tmp_path: Path, image: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path / "no-tools"))  # docker:// is written through skopeo
        with pytest.raises(ToolMissingError, match="needs skopeo"):
            write(image, "docker://example.org/x:1")
    with pytest.raises(PkgchunkError, match="can only be read"):
        write(image, f"rootfs:{tmp_path}/r")
    with pytest.raises(OutputError, match="not a valid docker image name"):
        write(image, f"docker-archive:{tmp_path}/d.tar:Bad Name")
    with pytest.raises(OutputError, match=r"gzip level must be 0\.\.9"):
        write(image, f"oci:{tmp_path}/o", level=11)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_concurrent_writers_keep_each_others_tags(tmp_path: Path, image: Image) -> None:
    out = tmp_path / "out"
    write(image, f"oci:{out}:base")
    errors: list[BaseException] = []

    def run(tag: str) -> None:
        try:
            write(image, f"oci:{out}:{tag}", compression="zstd" if tag.endswith("1") else "gzip")
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    index = json.loads((out / "index.json").read_text())
    tags = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    assert tags == ["base", "t0", "t1", "t2", "t3"]


def test_cli_reports_one_line_and_exit_2(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    (tmp_path / "plain").write_text("x")
    result = CliRunner().invoke(cli, ["rechunk", src, f"oci:{tmp_path}/plain/out:t"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"pkgchunk: error: oci:{tmp_path}/plain/out:t: ")


def test_rollback_spares_blobs_another_writer_now_uses(tmp_path: Path, image: Image) -> None:
    out = tmp_path / "out"
    write(image, f"oci:{out}:base")
    store = BlobStore(str(out), "test")
    shared = store.put_bytes(b'{"shared": true}', OCI_CONFIG)
    ours = store.put_bytes(b'{"only ours": true}', OCI_CONFIG)
    # Meanwhile another writer commits a tag whose manifest uses the shared blob.
    other = BlobStore(str(out), "other")
    manifest = other.put_bytes(
        canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": shared.to_json(), "layers": []}),
        OCI_MANIFEST,
    )
    add_to_index(str(out), manifest, "other", "other", [shared.digest, manifest.digest])
    other.keep()
    store.rollback()
    assert (out / "blobs" / "sha256" / shared.digest[7:]).exists()
    assert not (out / "blobs" / "sha256" / ours.digest[7:]).exists()
    refs = referenced(str(out))
    assert refs is not None and refs == {p.name for p in (out / "blobs" / "sha256").iterdir()}


def test_index_update_refuses_a_vanished_blob(tmp_path: Path, image: Image) -> None:
    out = tmp_path / "out"
    write(image, f"oci:{out}:base")
    before = (out / "index.json").read_bytes()
    store = BlobStore(str(out), "test")
    desc = store.put_bytes(b"{}", OCI_MANIFEST)
    gone = "sha256:" + "0" * 64
    with pytest.raises(OutputError, match="disappeared while writing"):
        add_to_index(str(out), desc, "new", "test", [desc.digest, gone])
    assert (out / "index.json").read_bytes() == before


def test_referenced_follows_nested_indexes(tmp_path: Path) -> None:
    inner = build_image([[tfile("a", b"a")]], arch="arm64")
    outer = build_index([build_index([inner]), build_image([[tfile("b", b"b")]])])
    write_layout(tmp_path / "lay", {"multi": outer})
    refs = referenced(str(tmp_path / "lay"))
    assert refs == {p.name for p in (tmp_path / "lay" / "blobs" / "sha256").iterdir()}
    (tmp_path / "lay" / "blobs" / "sha256" / outer.digest[7:]).write_text("{broken")
    assert referenced(str(tmp_path / "lay")) is None  # unknown: rollback removes nothing
