"""``--keep-base REF|N``: keep a base image's layers byte for byte, plan only what is above.

Every image built ``FROM`` a base shares the base's layers with the base and with its
siblings; rechunking the whole image would throw that away. Here the output's bottom layers
are the base's own blobs (same digests, copied, never recompressed), and only the delta the
derived layers make to the base's filesystem (``plan/above.py``) is planned by package and
written above them.

With a reference, the base is read (a remote one is copied locally by skopeo) and the input
must start with its layers (same diff_ids); with a count N, the input's bottom N layers are
the base.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from pkgchunk.errors import InputError
from pkgchunk.image import Image, LayerInfo
from pkgchunk.io import base_tree, layer_diff_id, open_blobs
from pkgchunk.oci.mediatypes import SAME_BYTES
from pkgchunk.oci.read import Source
from pkgchunk.oci.write import KeptLayer, ReusableBlob
from pkgchunk.refs import parse_ref
from pkgchunk.tree import FileTree


@dataclass(frozen=True)
class Base:
    """The kept base: its layers as the writer copies them, and its filesystem."""

    ref: str
    layers: tuple[KeptLayer, ...]
    tree: FileTree


def parse_count(spec: str) -> int | None:
    """``N`` -> N (an image reference always names a transport, so never all digits)."""
    return int(spec) if spec.isascii() and spec.isdigit() else None


def _kept(n: int, info: LayerInfo, path: str, digest: str, size: int, media_type: str,
          annotations: tuple[tuple[str, str], ...]) -> KeptLayer:
    """Docker layer types are written as the OCI type of the same bytes (same digest)."""
    blob = ReusableBlob(path, digest, size, SAME_BYTES.get(media_type, media_type))
    return KeptLayer(blob, info.diff_id, annotations, comment=f"pkgchunk: base layer {n}")


def _from_input(image: Image, count: int) -> tuple[KeptLayer, ...]:
    if not 1 <= count <= len(image.layers):
        raise InputError(
            f"{image.ref}: --keep-base {count}: must be 1 to {len(image.layers)}, the image's"
            " number of layers"
        )
    out = []
    for n, info in enumerate(image.layers[:count], 1):
        path = image.blob_path.get(info.digest)
        if path is None:
            raise InputError(f"{image.ref}: layer {n} ({info.digest}): its blob is not on disk")
        out.append(_kept(n, info, path, info.digest, info.size, info.media_type,
                         info.annotations))
    return tuple(out)


def _base_ids(label: str, source: Source) -> list[str]:
    rootfs = source.config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if (
        not isinstance(ids, list)
        or not all(isinstance(i, str) for i in ids)
        or len(ids) != len(source.layers)
        or not ids
    ):
        raise InputError(f"{label}: the base's config does not list one diff_id per layer")
    return ids


def _from_ref(image: Image, label: str, source: Source) -> tuple[KeptLayer, ...]:
    ids = _base_ids(label, source)
    have = [info.diff_id for info in image.layers]
    for n, want in enumerate(ids, 1):
        if n > len(have):
            raise InputError(
                f"{image.ref}: does not start with the base {label}: the base has {len(ids)}"
                f" layers, the image {len(have)}"
            )
        if have[n - 1] != want:
            raise InputError(
                f"{image.ref}: does not start with the base {label}: layer {n} is"
                f" {have[n - 1]}, the base's is {want}"
            )
    out = []
    for n, (blob, info) in enumerate(zip(source.layers, image.layers, strict=False), 1):
        if blob.digest is None or blob.size is None:
            raise InputError(f"{label}: layer {n}: the base does not say its digest")
        if blob.digest != info.digest and layer_diff_id(blob.path, label) != info.diff_id:
            # The input's own blob is verified; the base's different one must hold the
            # same tar before it stands in for it.
            raise InputError(
                f"{label}: layer {n} ({blob.digest}) does not hold its diff_id {info.diff_id}"
            )
        out.append(_kept(n, info, blob.path, blob.digest, blob.size, blob.media_type,
                         blob.annotations))
    return tuple(out)


@contextlib.contextmanager
def open_base(image: Image, spec: str) -> Iterator[Base]:
    """The base ``spec`` names (a reference, or a count of the input's bottom layers),
    checked against ``image``; its blobs stay on disk until the context ends."""
    if not image.layer_tars:
        raise InputError(
            f"{image.ref}: --keep-base needs the image's layers (a rootfs: or --mount input"
            " has none)"
        )
    count = parse_count(spec)
    workdir = tempfile.mkdtemp(prefix="pkgchunk-base-")
    try:
        if count is not None:
            layers = _from_input(image, count)
            label = f"{image.ref} (bottom {count} layers)"
        else:
            ref = parse_ref(spec)
            label = str(ref)
            layers = _from_ref(image, label, open_blobs(ref, workdir))
        yield Base(label, layers, base_tree(image, len(layers)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

