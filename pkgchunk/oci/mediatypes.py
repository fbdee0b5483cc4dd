"""Every media type pkgchunk reads or writes, and the one name for a layer's compression.

Kept in one module so that a new layer format (zstd:chunked) is added in one place and
readers, writers and the previous-build lookup agree on which types carry the same bytes.
"""

from __future__ import annotations

from typing import Literal

#: How a layer blob is compressed. ``none`` is a plain tar, on input and output alike.
Compression = Literal["gzip", "zstd", "zstd:chunked", "none"]
COMPRESSIONS: tuple[Compression, ...] = ("gzip", "zstd", "zstd:chunked", "none")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

#: What pkgchunk writes for each compression.
LAYER_MEDIA_TYPES: dict[Compression, str] = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    # ordinary zstd to every reader; descriptor annotations locate its TOC (oci/zstdchunked.py)
    "zstd:chunked": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}

#: What a docker-archive layer is reported as, by what its bytes are.
DOCKER_LAYER_TYPES: dict[Compression, str] = {
    "none": "application/vnd.docker.image.rootfs.diff.tar",
    "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "zstd": LAYER_MEDIA_TYPES["zstd"],
}

#: Docker layer types whose blobs are byte for byte an OCI layer type: a previous build
#: pushed through Docker's media types can still donate its blobs.
SAME_BYTES: dict[str, str] = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": LAYER_MEDIA_TYPES["gzip"],
    "application/vnd.docker.image.rootfs.diff.tar.zstd": LAYER_MEDIA_TYPES["zstd"],
    "application/vnd.docker.image.rootfs.diff.tar": LAYER_MEDIA_TYPES["none"],
}
