"""Reference parsing: skopeo's transport syntax, bare layout paths, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgchunk.errors import InputError, ToolMissingError
from pkgchunk.io import default_max_bytes, open_image
from pkgchunk.refs import ImageRef, parse_ref


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oci:/tmp/img", ImageRef("oci", "/tmp/img", None)),
        ("oci:/tmp/img:v1", ImageRef("oci", "/tmp/img", "v1")),
        ("oci:rel/dir:latest", ImageRef("oci", "rel/dir", "latest")),
        ("oci-archive:/a/b.tar", ImageRef("oci-archive", "/a/b.tar", None)),
        ("oci-archive:/a/b.tar:t", ImageRef("oci-archive", "/a/b.tar", "t")),
        ("docker-archive:x.tar", ImageRef("docker-archive", "x.tar", None)),
        # docker-archive's reference is name:tag, so everything after the path is the tag
        ("docker-archive:x.tar:busybox:1.36", ImageRef("docker-archive", "x.tar", "busybox:1.36")),
        ("docker-archive:x.tar:@1", ImageRef("docker-archive", "x.tar", "@1")),
        ("rootfs:/srv/root", ImageRef("rootfs", "/srv/root", None)),
        ("rootfs:/srv/with:colon", ImageRef("rootfs", "/srv/with:colon", None)),
        ("containers-storage:fedora:40", ImageRef("containers-storage", "fedora:40", None)),
        ("docker://quay.io/fedora/fedora:40", ImageRef("docker", "quay.io/fedora/fedora:40")),
    ],
)
def test_parse(text: str, expected: ImageRef) -> None:
    ref = parse_ref(text)
    assert ref == expected
    assert str(ref) == text
    assert parse_ref(str(ref)) == ref


def test_bare_layout_directory_means_oci(tmp_path: Path) -> None:
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    assert parse_ref(str(tmp_path)) == ImageRef("oci", str(tmp_path))


def test_bare_directory_without_layout_suggests_rootfs(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        parse_ref(str(tmp_path))
    assert str(err.value) == (
        f"{tmp_path}: directory has no oci-layout file (use rootfs:{tmp_path} for a plain tree)"
    )


def test_unknown_transport_is_named() -> None:
    with pytest.raises(InputError, match=r"^dir:/x: unknown transport 'dir' \(use oci:DIR"):
        parse_ref("dir:/x")


def test_not_a_reference(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    with pytest.raises(InputError, match=rf"^{missing}: not an image reference"):
        parse_ref(str(missing))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty image reference"),
        ("oci:", "oci:: missing path after 'oci:'"),
        ("oci:/x:", "oci:/x:: empty tag after ':'"),
        ("docker://", "docker://: missing image name after docker://"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_ref(text)
    assert str(err.value).startswith(message)


def test_rootfs_is_input_only() -> None:
    assert parse_ref("rootfs:/x").transport == "rootfs"
    with pytest.raises(InputError, match=r"^rootfs:/x: rootfs: can only be read"):
        parse_ref("rootfs:/x", output=True)


@pytest.mark.parametrize("text", ["docker://example.org/img:1", "containers-storage:img"])
def test_remote_transports_without_skopeo_say_how_to_install_it(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no skopeo on it
    with pytest.raises(ToolMissingError) as err:
        open_image(text)
    msg = str(err.value)
    assert msg.startswith(f"{text}: ")
    assert "needs skopeo" in msg and "apt-get install skopeo" in msg


def test_max_bytes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PKGCHUNK_MAX_IMAGE_BYTES", raising=False)
    assert default_max_bytes() == 64 << 30
    monkeypatch.setenv("PKGCHUNK_MAX_IMAGE_BYTES", "1000")
    assert default_max_bytes() == 1000
    monkeypatch.setenv("PKGCHUNK_MAX_IMAGE_BYTES", "lots")
    with pytest.raises(InputError, match=r"^PKGCHUNK_MAX_IMAGE_BYTES='lots': not a positive"):
        default_max_bytes()
