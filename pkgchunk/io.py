"""Open any supported input reference as a flattened :class:`Image`."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

from pkgchunk import progress
from pkgchunk.errors import InputError
from pkgchunk.image import Image
from pkgchunk.oci.rootfs import read_rootfs
from pkgchunk.refs import REMOTE_TRANSPORTS, ImageRef, parse_ref

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
    """Read and flatten an image; the caller closes it (it owns a temp dir of spooled layers).

    ``containers-storage:`` and ``docker://`` go through skopeo
    (see :mod:`pkgchunk.transport.skopeo`).
    """
    image_ref = parse_ref(ref) if isinstance(ref, str) else ref
    limit = default_max_bytes() if max_bytes is None else max_bytes
    if image_ref.transport == "rootfs":
        with progress.step(f"reading {image_ref}"):
            return read_rootfs(image_ref.path, ref=str(image_ref))
    if image_ref.transport in REMOTE_TRANSPORTS:
        from pkgchunk.transport.skopeo import open_remote

        with progress.step(f"reading {image_ref}"):
            return open_remote(image_ref, max_bytes=limit)
    from pkgchunk.oci.read import read_image

    with progress.step(f"reading {image_ref}"):
        return read_image(image_ref, max_bytes=limit)


def open_stack(refs: Sequence[str | ImageRef], *, max_bytes: int | None = None) -> Image:
    """Several images stacked in order (base first) and flattened as one: what a
    Containerfile starting ``FROM`` the first and adding the others' layers would give.
    One reference is :func:`open_image`."""
    parsed = [parse_ref(r) if isinstance(r, str) else r for r in refs]
    if not parsed:
        raise InputError("no image to read")
    if len(parsed) == 1:
        return open_image(parsed[0], max_bytes=max_bytes)
    for r in parsed:
        if r.transport == "rootfs":
            raise InputError(f"{r}: a rootfs cannot be stacked with other images; make it an"
                             " image first (pkgchunk rechunk rootfs:DIR oci:DIR:TAG)")
    limit = default_max_bytes() if max_bytes is None else max_bytes
    from pkgchunk.oci.read import read_stack

    cleanups: list[Callable[[], None]] = []
    try:
        local = []
        for r in parsed:
            if r.transport in REMOTE_TRANSPORTS:
                from pkgchunk.transport.skopeo import fetch

                workdir = tempfile.mkdtemp(prefix="pkgchunk-fetch-")
                cleanups.append(functools.partial(shutil.rmtree, workdir, ignore_errors=True))
                local.append(fetch(r, workdir))
            else:
                local.append(r)
        label = " + ".join(str(r) for r in parsed)
        with progress.step(f"reading {label}"):
            image = read_stack(local, max_bytes=limit)
    except BaseException:
        for c in reversed(cleanups):
            c()
        raise
    image.ref = label
    image.tree.label = label
    image.cleanups.extend(cleanups)
    return image
