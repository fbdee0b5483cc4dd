"""What a client holding OLD pulls to get NEW, and which groups changed: the update cost.

A registry client (containers/image, containerd) fetches every layer blob of NEW
whose digest it does not hold; Docker's classic store reuses only the common
prefix of the layer list, so that cost is reported too. For zstd:chunked layers the cost
for a partial-pull client is reported next to it (:mod:`pkgchunk.partialpull`), from the
two images' TOCs. Only manifests, configs and TOCs are read, never layer contents.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

from pkgchunk.errors import InputError
from pkgchunk.io import open_manifest
from pkgchunk.oci import zstdchunked
from pkgchunk.oci.read import Source, config_labels
from pkgchunk.oci.write import LAYER_ANNOTATION
from pkgchunk.partialpull import LayerFetch, known_digests, layer_fetch
from pkgchunk.plan.record import BuildRecord
from pkgchunk.plan.split import parent_key, part_of
from pkgchunk.refs import ImageRef, parse_ref


@dataclass(frozen=True, slots=True)
class LayerChange:
    name: str
    digest: str
    size: int
    pulled: bool
    #: zstd:chunked: what a partial-pull client fetches of it (None: unknown)
    partial: LayerFetch | None = None


@dataclass(frozen=True, slots=True)
class GroupChange:
    """A group whose version differs (``old``/``new`` '' when it was added/removed);
    ``layer`` is the layer of NEW holding it (of OLD when it was removed)."""

    group: str
    old: str
    new: str
    layer: str = ""


@dataclass(frozen=True, slots=True)
class SplitChange:
    """A package group NEW holds split into parts by file behaviour (plan/split.py), and
    which of its parts changed: ``parts`` is ``(part, changed, layer)`` per part."""

    group: str
    parts: tuple[tuple[str, bool, str], ...]


@dataclass(frozen=True, slots=True)
class DiffResult:
    old: str
    new: str
    pull_bytes: int
    total_bytes: int
    prefix_pull_bytes: int
    layers: tuple[LayerChange, ...]
    groups: tuple[GroupChange, ...]
    #: a partial-pull client's total, when NEW has a zstd:chunked layer to pull and every
    #: TOC needed could be read (local images only)
    partial_pull_bytes: int | None = None
    splits: tuple[SplitChange, ...] = ()


def _splits(
    old: dict[str, str], new: dict[str, str], layers: dict[str, str]
) -> tuple[SplitChange, ...]:
    parts: dict[str, list[tuple[str, bool, str]]] = {}
    for key in sorted(new):
        if part_of(key):
            parts.setdefault(parent_key(key), []).append(
                (part_of(key), old.get(key) != new[key], layers.get(key, ""))
            )
    return tuple(SplitChange(g, tuple(p)) for g, p in sorted(parts.items()))


def _versions(label: str, source: Source) -> tuple[dict[str, str], dict[str, str]]:
    """group -> version and group -> layer name, from the image's plan label."""
    plan = BuildRecord.from_labels(config_labels(source.config)).plan
    if plan is None:
        return {}, {}
    where = {key: layer.name for layer in plan.layers for key in layer.groups}
    return {key: hist.version for key, hist in plan.history.items()}, where


def diff(old: str | ImageRef, new: str | ImageRef) -> DiffResult:
    old_ref = parse_ref(old) if isinstance(old, str) else old
    new_ref = parse_ref(new) if isinstance(new, str) else new
    for ref in (old_ref, new_ref):
        if ref.transport == "rootfs":
            raise InputError(f"{ref}: diff compares images, not a rootfs")
    workdir = tempfile.mkdtemp(prefix="pkgchunk-diff-")
    try:
        a = open_manifest(old_ref, workdir + "/a")
        b = open_manifest(new_ref, workdir + "/b")
        fetches = _partial(str(old_ref), a, str(new_ref), b)  # while archives are unpacked
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    held = {blob.digest for blob in a.layers}
    kept = BuildRecord.from_labels(config_labels(b.config)).base_layers
    layers = []
    prefix_broken = False
    prefix_pull = 0
    for n, blob in enumerate(b.layers):
        size = blob.size or 0
        default = f"base/{n + 1}" if n < kept else f"layer {n + 1}"
        name = dict(blob.annotations).get(LAYER_ANNOTATION, default)
        digest = blob.digest or ""
        pulled = digest not in held
        fetch = fetches.get(digest) if fetches is not None and pulled else None
        layers.append(LayerChange(name, digest, size, pulled, fetch))
        same_place = n < len(a.layers) and a.layers[n].digest == blob.digest
        prefix_broken = prefix_broken or not same_place
        if prefix_broken:
            prefix_pull += size
    (va, la), (vb, lb) = _versions(str(old_ref), a), _versions(str(new_ref), b)
    groups = tuple(
        GroupChange(key, va.get(key, ""), vb.get(key, ""), lb.get(key) or la.get(key, ""))
        for key in sorted(set(va) | set(vb))
        if va.get(key) != vb.get(key)
    )
    return DiffResult(
        old=str(old_ref),
        new=str(new_ref),
        pull_bytes=sum(lc.size for lc in layers if lc.pulled),
        total_bytes=sum(lc.size for lc in layers),
        prefix_pull_bytes=prefix_pull,
        layers=tuple(layers),
        groups=groups,
        partial_pull_bytes=_partial_total(layers, fetches),
        splits=_splits(va, vb, lb),
    )


def _tocs(label: str, source: Source, digests: set[str] | None) -> dict[str, tuple[Any, Any]]:
    """digest -> (layout, TOC) of the zstd:chunked layers (those in ``digests``, or all)."""
    out: dict[str, tuple[Any, Any]] = {}
    for blob in source.layers:
        where = zstdchunked.layout(blob.annotations)
        if where is None or not blob.digest or (digests is not None and blob.digest not in digests):
            continue
        if not blob.path or not os.path.isfile(blob.path):
            raise _NoBlob
        with open(blob.path, "rb") as f:
            out[blob.digest] = (where, zstdchunked.read_toc(f, where, f"{label}: {blob.digest}"))
    return out


class _NoBlob(Exception):
    pass


def _partial(
    old_label: str, a: Source, new_label: str, b: Source
) -> dict[str, LayerFetch] | None:
    """digest -> what a partial-pull client fetches of each of NEW's layers it lacks;
    None when NEW has no zstd:chunked layer to pull or a TOC is out of reach (a registry)."""
    held = {blob.digest for blob in a.layers}
    pulled = {blob.digest for blob in b.layers if blob.digest and blob.digest not in held}
    try:
        new_tocs = _tocs(new_label, b, pulled)
        if not new_tocs:
            return None
        known = known_digests(toc for _where, toc in _tocs(old_label, a, None).values())
    except _NoBlob:
        return None
    out = {}
    for blob in b.layers:
        if blob.digest in pulled and blob.digest:
            where, toc = new_tocs.get(blob.digest, (None, None))
            out[blob.digest] = layer_fetch(blob.digest, blob.size or 0, where, toc, known)
    return out


def _partial_total(layers: list[LayerChange], fetches: dict[str, LayerFetch] | None) -> int | None:
    if fetches is None:
        return None
    return sum(lc.partial.total for lc in layers if lc.partial is not None)

