"""What a client holding OLD pulls to get NEW, and which groups changed: the update cost.

A registry client (containers/image, containerd) fetches every layer blob of NEW
whose digest it does not hold; Docker's classic store reuses only the common
prefix of the layer list, so that cost is reported too. Only manifests and
configs are read, never layer contents.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass

from pkgchunk.errors import InputError
from pkgchunk.io import open_manifest
from pkgchunk.oci.read import Source, config_labels
from pkgchunk.oci.write import LAYER_ANNOTATION
from pkgchunk.plan.record import BuildRecord
from pkgchunk.refs import ImageRef, parse_ref


@dataclass(frozen=True, slots=True)
class LayerChange:
    name: str
    digest: str
    size: int
    pulled: bool


@dataclass(frozen=True, slots=True)
class GroupChange:
    """A group whose version differs (``old``/``new`` '' when it was added/removed);
    ``layer`` is the layer of NEW holding it (of OLD when it was removed)."""

    group: str
    old: str
    new: str
    layer: str = ""


@dataclass(frozen=True, slots=True)
class DiffResult:
    old: str
    new: str
    pull_bytes: int
    total_bytes: int
    prefix_pull_bytes: int
    layers: tuple[LayerChange, ...]
    groups: tuple[GroupChange, ...]


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
        layers.append(LayerChange(name, digest, size, digest not in held))
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
    )
