"""An OCI image layout on disk, and the choice of one image manifest from its index."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from pkgchunk.errors import InputError
from pkgchunk.oci.blobs import parse_digest, parse_json, read_json_file, read_verified
from pkgchunk.oci.mediatypes import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from pkgchunk.oci.platform import host_arch, host_variant
from pkgchunk.oci.store import DEFAULT_TAG

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
REF_NAME = "org.opencontainers.image.ref.name"
#: Nested indexes followed at most this deep (a cycle would otherwise loop forever).
MAX_DEPTH = 8


class Layout:
    """``oci-layout`` + ``index.json`` + ``blobs/<alg>/<hex>`` under ``root``.

    ``resolve`` maps a layout-relative name to a file (archives use it to follow
    their own member links); by default it is a plain join.
    """

    def __init__(
        self, label: str, root: str, *, resolve: Callable[[str, str], str] | None = None
    ) -> None:
        self.label = label
        self.root = root
        self._resolve = resolve
        if not os.path.isdir(root):
            raise InputError(f"{label}: {root} is not a directory")
        marker = read_json_file(label, self._file("oci-layout", "oci-layout file"), "oci-layout")
        if not isinstance(marker.get("imageLayoutVersion"), str):
            raise InputError(f"{label}: malformed oci-layout: no imageLayoutVersion")
        self.index = read_json_file(label, self._file("index.json", "index.json"), "index.json")

    def _file(self, name: str, what: str) -> str:
        if self._resolve is None:
            return os.path.join(self.root, name)
        try:
            return self._resolve(name, what)
        except InputError:
            return os.path.join(self.root, name)  # reported as missing when opened

    def blob(self, digest: str) -> str:
        alg, hexpart = parse_digest(self.label, digest)
        return self._file(f"blobs/{alg}/{hexpart}", f"blob {digest}")

    def json(self, desc: dict[str, Any], what: str) -> dict[str, Any]:
        digest = desc.get("digest")
        size = desc.get("size")
        parse_digest(self.label, digest)
        assert isinstance(digest, str)
        if size is not None and (not isinstance(size, int) or size < 0):
            raise InputError(f"{self.label}: malformed {what} descriptor: bad size {size!r}")
        data = read_verified(self.label, self.blob(digest), digest, size)
        return parse_json(self.label, data, f"{what} {digest}")


def _descriptors(label: str, doc: dict[str, Any], what: str) -> list[dict[str, Any]]:
    items = doc.get("manifests")
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise InputError(f"{label}: malformed {what}: 'manifests' is not a list of descriptors")
    return list(items)


def _ref_name(desc: dict[str, Any]) -> str | None:
    ann = desc.get("annotations")
    name = ann.get(REF_NAME) if isinstance(ann, dict) else None
    return name if isinstance(name, str) else None


def _tags_text(descs: list[dict[str, Any]]) -> str:
    names = sorted({_ref_name(d) or f"untagged {d.get('digest')}" for d in descs})
    return ", ".join(names) if names else "none"


def select_manifest(layout: Layout, tag: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The image manifest (descriptor, document) that ``tag`` names in the layout."""
    label = layout.label
    descs = _descriptors(label, layout.index, "index.json")
    if not descs:
        raise InputError(f"{label}: index.json lists no images")
    if tag is not None:
        matches = [d for d in descs if _ref_name(d) == tag]
        if not matches:
            raise InputError(f"{label}: tag '{tag}' not found (tags: {_tags_text(descs)})")
    else:
        matches = descs
        latest = [d for d in descs if _ref_name(d) == DEFAULT_TAG]
        if len(descs) > 1 and latest and not _platform_variants(descs):
            matches = latest  # what writing oci:DIR without a tag wrote
        elif len(descs) > 1 and not _platform_variants(descs):
            raise InputError(
                f"{label}: holds {len(descs)} images; name one with :TAG"
                f" (tags: {_tags_text(descs)})"
            )
    desc = matches[0] if len(matches) == 1 else _pick_platform(label, matches)
    return _resolve(layout, desc, 0)


def _platform_variants(descs: list[dict[str, Any]]) -> bool:
    """Several descriptors that are one image for different platforms (same or no tag)."""
    names = {_ref_name(d) for d in descs}
    return len(names) == 1 and all(isinstance(d.get("platform"), dict) for d in descs)


def _resolve(
    layout: Layout, desc: dict[str, Any], depth: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    label = layout.label
    if depth > MAX_DEPTH:
        raise InputError(f"{label}: image indexes nested more than {MAX_DEPTH} deep")
    media_type = desc.get("mediaType")
    doc = layout.json(desc, "index" if media_type in INDEX_TYPES else "manifest")
    kind = doc.get("mediaType") or media_type
    if kind in INDEX_TYPES or (kind is None and "manifests" in doc):
        children = _descriptors(label, doc, f"index {desc.get('digest')}")
        if not children:
            raise InputError(f"{label}: index {desc.get('digest')} lists no images")
        return _resolve(layout, _pick_platform(label, children), depth + 1)
    if kind in MANIFEST_TYPES or (kind is None and "layers" in doc):
        return desc, doc
    raise InputError(f"{label}: {desc.get('digest')} is not an image manifest (type {kind!r})")


def _platform(desc: dict[str, Any]) -> tuple[str, str, str]:
    p = desc.get("platform")
    if not isinstance(p, dict):
        return ("", "", "")
    return (str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "")))


def _pick_platform(label: str, descs: list[dict[str, Any]]) -> dict[str, Any]:
    """The linux image for this host's architecture (attestations are not images)."""
    images = [d for d in descs if _platform(d)[0] != "unknown"]
    if len(images) == 1:
        return images[0]
    arch = host_arch()
    matches = [d for d in images if _platform(d)[:2] == ("linux", arch)]
    if not matches:
        found = ", ".join(sorted({"/".join(p for p in _platform(d) if p) for d in images}))
        raise InputError(f"{label}: no linux/{arch} image in the index (found: {found})")
    variant = host_variant()
    for d in matches:
        if _platform(d)[2] == variant:
            return d
    return matches[0]
