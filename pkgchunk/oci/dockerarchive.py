"""``docker save`` archives: manifest.json naming a config and layer tars per image."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from pkgchunk.errors import InputError
from pkgchunk.oci.archive import Unpacked
from pkgchunk.oci.blobs import MAX_JSON_BYTES, parse_json
from pkgchunk.oci.mediatypes import DOCKER_CONFIG, DOCKER_MANIFEST
from pkgchunk.oci.spool import LayerBlob

_HEX_NAME = re.compile(r"(?:^|/)(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?$")


def read_docker_archive(
    label: str, unpacked: Unpacked, tag: str | None
) -> tuple[dict[str, Any], dict[str, Any], list[LayerBlob], dict[str, str]]:
    """(synthesised manifest, config, layers, blob paths) of the image ``tag`` names.

    ``tag`` is ``name:tag`` (matched against RepoTags, ``:latest`` implied) or
    ``@N`` (the N-th image, as skopeo spells it).
    """
    path = unpacked.path("manifest.json", "manifest.json")
    entries = _manifest_entries(label, path)
    entry = _select(label, entries, tag)
    config_name = entry.get("Config")
    layer_names = entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise InputError(f"{label}: malformed manifest.json: entry lacks Config or Layers")
    config_path = unpacked.path(config_name, "config")
    config_bytes = _read_small(label, config_path, config_name)
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    _check_named_digest(label, config_name, config_digest)
    config = parse_json(label, config_bytes, f"config {config_name}")
    layers: list[LayerBlob] = []
    for name in layer_names:
        if not isinstance(name, str):
            raise InputError(f"{label}: malformed manifest.json: layer {name!r}")
        m = _HEX_NAME.search(name)
        # Only blobs/sha256/<hex> names are content addresses (legacy <id>/layer.tar is not).
        digest = f"sha256:{m.group(1)}" if m and name.startswith("blobs/sha256/") else None
        layers.append(LayerBlob(path=unpacked.path(name, "layer"), media_type="", digest=digest))
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG,
            "size": len(config_bytes),
            "digest": config_digest,
        },
        "layers": [],  # filled in once the layers are read (their digests are computed)
    }
    return manifest, config, layers, {config_digest: config_path}


def _manifest_entries(label: str, path: str) -> list[dict[str, Any]]:
    data = _read_small(label, path, "manifest.json")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise InputError(f"{label}: malformed manifest.json: {err}") from None
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise InputError(f"{label}: malformed manifest.json: not a list of images")
    if not doc:
        raise InputError(f"{label}: manifest.json lists no images")
    return doc


def _read_small(label: str, path: str, name: str) -> bytes:
    if os.path.getsize(path) > MAX_JSON_BYTES:
        raise InputError(f"{label}: {name} is too large")
    with open(path, "rb") as f:
        return f.read()


def _check_named_digest(label: str, name: str, digest: str) -> None:
    m = _HEX_NAME.search(name)
    if m and f"sha256:{m.group(1)}" != digest:
        raise InputError(f"{label}: blob sha256:{m.group(1)} digest mismatch")


def _norm_tag(tag: str) -> str:
    last = tag.rpartition("/")[2]
    if ":" not in last:
        tag += ":latest"
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return tag


def _tags(entries: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for n, e in enumerate(entries):
        tags = e.get("RepoTags")
        if isinstance(tags, list) and tags:
            out.extend(str(t) for t in tags)
        else:
            out.append(f"@{n}")
    return out


def _select(label: str, entries: list[dict[str, Any]], tag: str | None) -> dict[str, Any]:
    if tag is None:
        if len(entries) == 1:
            return entries[0]
        raise InputError(
            f"{label}: holds {len(entries)} images; name one with :NAME:TAG or :@N"
            f" (tags: {', '.join(_tags(entries))})"
        )
    if tag.startswith("@"):
        if tag[1:].isdigit() and int(tag[1:]) < len(entries):
            return entries[int(tag[1:])]
        raise InputError(f"{label}: no image {tag} (the archive holds {len(entries)})")
    want = _norm_tag(tag)
    for e in entries:
        tags = e.get("RepoTags")
        if isinstance(tags, list) and want in {_norm_tag(str(t)) for t in tags}:
            return e
    raise InputError(f"{label}: tag '{tag}' not found (tags: {', '.join(_tags(entries))})")
