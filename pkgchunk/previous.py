"""The previous build: its plan label and its compressed layers, without flattening it.

Stability needs two things from the image pkgchunk wrote last time: the
``org.pkgchunk.plan`` label (which group sat in which layer) and its blobs keyed
by diff_id, so an unchanged layer is copied byte for byte instead of compressed
again (a compressor upgrade then cannot change its digest).

A previous build in a registry or container storage is only inspected (its manifest
and config through skopeo): the plan label is what keeps layers stable; its blobs are
not fetched, and the writer's deterministic compression gives the same digests again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

from pkgchunk.errors import InputError
from pkgchunk.io import default_max_bytes
from pkgchunk.oci.compress import LAYER_MEDIA_TYPES
from pkgchunk.oci.read import Source, read_source
from pkgchunk.oci.write import ReusableBlob
from pkgchunk.refs import ImageRef, parse_ref
from pkgchunk.transport.remote import exists, inspect_source
from pkgchunk.transport.skopeo import Side, is_remote

#: Docker media types whose blobs are byte-compatible with an OCI layer type.
SAME_BYTES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": LAYER_MEDIA_TYPES["gzip"],
    "application/vnd.docker.image.rootfs.diff.tar.zstd": LAYER_MEDIA_TYPES["zstd"],
    "application/vnd.docker.image.rootfs.diff.tar": LAYER_MEDIA_TYPES["none"],
}


@dataclass
class Previous:
    """A previous image's labels and reusable blobs (a context manager: archives are
    unpacked into a temporary directory that lives until ``close``)."""

    ref: str
    labels: dict[str, str]
    reuse: dict[str, ReusableBlob] = field(default_factory=dict)
    workdir: str | None = None

    def close(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Previous:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _from_source(label: str, source: Source) -> tuple[dict[str, str], dict[str, ReusableBlob]]:
    cfg = source.config.get("config") or {}
    raw_labels = cfg.get("Labels") if isinstance(cfg, dict) else None
    labels = (
        {str(k): str(v) for k, v in raw_labels.items()} if isinstance(raw_labels, dict) else {}
    )
    rootfs = source.config.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    reuse: dict[str, ReusableBlob] = {}
    if isinstance(diff_ids, list) and len(diff_ids) == len(source.layers):
        for diff_id, blob in zip(diff_ids, source.layers, strict=True):
            if isinstance(diff_id, str) and blob.digest and blob.size is not None and blob.path:
                media_type = SAME_BYTES.get(blob.media_type, blob.media_type)
                reuse.setdefault(
                    diff_id, ReusableBlob(blob.path, blob.digest, blob.size, media_type)
                )
    return labels, reuse


def open_previous(ref: str | ImageRef, side: Side = "src") -> Previous:
    """Read ``ref``'s config and manifest (verified); raises InputError when unusable.

    ``side`` says whose registry options apply to a remote reference (``dest``: it is
    the destination being replaced)."""
    image_ref = parse_ref(ref) if isinstance(ref, str) else ref
    if image_ref.transport == "rootfs":
        raise InputError(f"{image_ref}: a previous build must be an image, not a rootfs")
    workdir = tempfile.mkdtemp(prefix="pkgchunk-prev-")
    try:
        if is_remote(image_ref):
            source = inspect_source(image_ref, workdir, side)
        else:
            source = read_source(image_ref, workdir, max_bytes=default_max_bytes())
        labels, reuse = _from_source(str(image_ref), source)
        return Previous(str(image_ref), labels, reuse, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def dest_has_tag(dest: ImageRef) -> bool:
    """Whether DEST already holds an image at DEST's name (the automatic previous build):
    an ``oci:`` layout with that tag, or a registry/storage image skopeo finds. A layout
    we cannot parse is left for the writer to refuse."""
    if is_remote(dest):
        return exists(dest, "dest")
    if dest.transport != "oci":
        return False
    index_path = os.path.join(dest.path, "index.json")
    try:
        with open(index_path, "rb") as f:
            index = json.loads(f.read(16 << 20))
    except (OSError, ValueError, RecursionError):
        return False
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list):
        return False
    names = [
        (m.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        for m in manifests
        if isinstance(m, dict)
    ]
    if dest.tag is None:
        return len(manifests) == 1
    return dest.tag in names
