"""Open any supported input reference as a flattened :class:`Image`."""

from __future__ import annotations

import os
import shutil

from .errors import InputError, ToolMissingError
from .image import Image
from .refs import ImageRef, parse_ref
from .rootfs import read_rootfs

#: Default bound on the uncompressed size of all layers (a decompression-bomb guard).
DEFAULT_MAX_BYTES = 64 << 30
MAX_BYTES_ENV = "PKGCHUNK_MAX_IMAGE_BYTES"


def default_max_bytes() -> int:
    """``$PKGCHUNK_MAX_IMAGE_BYTES`` or 64 GiB."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{MAX_BYTES_ENV}={text!r}: not a positive number of bytes")
    return value


def open_image(ref: str | ImageRef, *, max_bytes: int | None = None) -> Image:
    """Read and flatten an image; the caller closes it (it owns a temp dir of spooled layers)."""
    image_ref = parse_ref(ref) if isinstance(ref, str) else ref
    limit = default_max_bytes() if max_bytes is None else max_bytes
    if image_ref.transport == "rootfs":
        return read_rootfs(image_ref.path, ref=str(image_ref))
    if image_ref.transport in ("oci", "oci-archive", "docker-archive"):
        from .oci.read import read_image

        return read_image(image_ref, max_bytes=limit)
    if shutil.which("skopeo") is None:
        raise ToolMissingError(
            f"{image_ref}: reading {image_ref.transport} images needs skopeo"
            " (apt-get install skopeo)"
        )
    raise InputError(
        f"{image_ref}: transport '{image_ref.transport}' is not supported yet;"
        f" copy it first: skopeo copy {image_ref} oci:DIR:TAG"
    )
