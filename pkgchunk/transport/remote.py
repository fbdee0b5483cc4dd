"""Manifest and config of a registry or container-storage image, through ``skopeo
inspect``: what ``diff`` and a previous build need, without fetching a layer.

The documents are laid out as a minimal OCI layout and read by the layout reader, so
they pass the same checks (digests, sizes, descriptors) as a local image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from typing import TYPE_CHECKING

from pkgchunk.errors import InputError
from pkgchunk.refs import ImageRef
from pkgchunk.transport.proc import run, tool
from pkgchunk.transport.skopeo import Side, auth_args, by_digest, skopeo_name

if TYPE_CHECKING:
    from pkgchunk.oci.read import Source

log = logging.getLogger(__name__)

#: Largest manifest or config accepted from ``skopeo inspect`` (as for blobs on disk).
_MAX_JSON = 16 << 20
#: skopeo's words for "there is no such image" (registries, containers-storage).
_NOT_FOUND = re.compile(
    r"manifest unknown|name unknown|not found|does not resolve to an image ID"
    r"|identifier is not an image|no such image",
    re.IGNORECASE,
)


def _inspect(ref: ImageRef, name: str, side: Side, *extra: str) -> bytes:
    skopeo = tool("skopeo", f"{ref}: reading {ref.transport}: images")
    cmd = [skopeo, "inspect", "--raw", *extra, *auth_args(ref, side, inspect=True), name]
    data = run(cmd, str(ref), InputError).encode("utf-8", "surrogateescape")
    if len(data) > _MAX_JSON:
        raise InputError(f"{ref}: skopeo inspect returned more than {_MAX_JSON} bytes")
    return data


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def inspect_source(ref: ImageRef, workdir: str, side: Side = "src") -> Source:
    """Manifest and config of a remote image, verified like a layout's (no layer is read).

    The two documents are laid out as a minimal OCI layout under ``workdir`` and read by
    the layout reader, so they pass the same checks as a local image.
    """
    from pkgchunk.oci.blobs import parse_json
    from pkgchunk.oci.read import read_source
    from pkgchunk.oci.readlayout import INDEX_TYPES, _pick_platform

    label = str(ref)
    name = skopeo_name(ref)
    raw = _inspect(ref, name, side)
    doc = parse_json(label, raw, "manifest")
    if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
        items = doc.get("manifests")
        if not isinstance(items, list) or not all(isinstance(d, dict) for d in items) or not items:
            raise InputError(f"{label}: malformed index: no image descriptors")
        digest = _pick_platform(label, items).get("digest")
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise InputError(f"{label}: malformed index: bad digest {digest!r}")
        name = by_digest(ref, digest)
        raw = _inspect(ref, name, side)
        if _sha256(raw) != digest:
            raise InputError(f"{label}: manifest {digest} digest mismatch")
        doc = parse_json(label, raw, "manifest")
    media_type = doc.get("mediaType")
    config_desc = doc.get("config")
    if not isinstance(config_desc, dict) or not isinstance(media_type, str):
        raise InputError(f"{label}: malformed manifest: no config or mediaType")
    config = _inspect(ref, name, side, "--config")
    if config_desc.get("digest") != _sha256(config):
        raise InputError(f"{label}: skopeo returned a config that does not match the manifest")
    blobs = os.path.join(workdir, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    for data in (raw, config):
        with open(os.path.join(blobs, _sha256(data).partition(":")[2]), "wb") as f:
            f.write(data)
    with open(os.path.join(workdir, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": media_type, "digest": _sha256(raw), "size": len(raw)}],
    }
    with open(os.path.join(workdir, "index.json"), "w") as f:
        json.dump(index, f)
    return read_source(ImageRef("oci", workdir), workdir, max_bytes=_MAX_JSON)


def exists(ref: ImageRef, side: Side = "dest") -> bool:
    """Whether ``ref`` names an image; a failure other than "no such image" is an error."""
    try:
        _inspect(ref, skopeo_name(ref), side)
    except InputError as err:
        if _NOT_FOUND.search(str(err)):
            log.debug("%s", err)
            return False
        raise
    return True
