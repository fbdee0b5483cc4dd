"""Read OCI layouts, oci-archives and docker-archives into a flattened Image.

Every blob is verified against its digest while it is read; layers are spooled
once, uncompressed, into the Image's workdir and flattened from there.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pkgchunk import progress
from pkgchunk.errors import InputError
from pkgchunk.image import Image, LayerInfo
from pkgchunk.oci.archive import unpack
from pkgchunk.oci.blobs import parse_digest, parse_json, read_verified
from pkgchunk.oci.dockerarchive import read_docker_archive
from pkgchunk.oci.flatten import flatten
from pkgchunk.oci.readlayout import Layout, select_manifest
from pkgchunk.oci.spool import Budget, LayerBlob, spool
from pkgchunk.refs import ImageRef

#: Layers one image may have. Runtimes stop far below (overlayfs: ~128 lower dirs), and
#: this is also the most layers pkgchunk writes, so any image it reads it can write back.
MAX_LAYERS = 1000
#: Layers decompressed at once (each also hashes and writes on a helper thread).
SPOOL_JOBS = 2


@dataclass
class Source:
    """What a transport resolved to, before any layer is read."""

    manifest: dict[str, Any] | None
    config: dict[str, Any]
    layers: list[LayerBlob]
    blob_path: dict[str, str] = field(default_factory=dict)
    #: The manifest's digest (None when the source has no manifest blob: docker-archive).
    digest: str | None = None


def config_labels(config: Mapping[str, Any]) -> dict[str, str]:
    """An image config's labels as strings ({} when it has none or they are malformed)."""
    cfg = config.get("config") or {}
    raw = cfg.get("Labels") if isinstance(cfg, dict) else None
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def read_image(ref: ImageRef, *, max_bytes: int) -> Image:
    """Open ``oci:``, ``oci-archive:`` or ``docker-archive:`` (the caller closes the Image)."""
    label = str(ref)
    workdir = tempfile.mkdtemp(prefix="pkgchunk-")
    try:
        return _assemble(label, read_source(ref, workdir, max_bytes=max_bytes), workdir, max_bytes)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def read_stack(refs: Sequence[ImageRef], *, max_bytes: int) -> Image:
    """Images stacked in order, like the steps of one Containerfile: every layer of every
    image flattened together (a later image's whiteouts delete an earlier one's files).
    The config is the last image's, with all the diff_ids."""
    label = " + ".join(str(r) for r in refs)
    workdir = tempfile.mkdtemp(prefix="pkgchunk-")
    try:
        sources = [
            read_source(r, os.path.join(workdir, f"src{n}"), max_bytes=max_bytes)
            for n, r in enumerate(refs)
        ]
        config = copy.deepcopy(sources[-1].config)
        ids = [
            _diff_ids(str(r), s.config, len(s.layers))
            for r, s in zip(refs, sources, strict=True)
        ]
        if all(i is not None for i in ids):
            config["rootfs"] = {"type": "layers", "diff_ids": [d for i in ids for d in i or ()]}
        else:
            config.pop("rootfs", None)
        blob_path = {k: v for s in sources for k, v in s.blob_path.items()}
        stacked = Source(None, config, [b for s in sources for b in s.layers], blob_path)
        return _assemble(label, stacked, workdir, max_bytes)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def read_layers(label: str, layers: Sequence[LayerBlob], *, max_bytes: int) -> Image:
    """Only these layer blobs of an image, verified and flattened in order (the caller
    closes the Image): the part of a previous build that is worth reading."""
    workdir = tempfile.mkdtemp(prefix="pkgchunk-")
    try:
        return _assemble(label, Source(None, {}, list(layers)), workdir, max_bytes)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def read_source(ref: ImageRef, workdir: str, *, max_bytes: int) -> Source:
    """Manifest, config and layer blobs of ``ref``, verified but not spooled or flattened.

    What ``diff`` and a previous build need; archives are unpacked under ``workdir``.
    """
    label = str(ref)
    if ref.transport == "oci":
        return _read_layout(label, Layout(label, ref.path), ref.tag)
    if ref.transport in ("oci-archive", "docker-archive"):
        unpacked = unpack(label, ref.path, os.path.join(workdir, "archive"), max_bytes=max_bytes)
        if ref.transport == "oci-archive":
            layout = Layout(label, unpacked.root, resolve=unpacked.path)
            return _read_layout(label, layout, ref.tag)
        manifest, config, layers, paths = read_docker_archive(label, unpacked, ref.tag)
        return Source(manifest, config, layers, paths)
    raise InputError(f"{label}: not an OCI transport")


def _read_layout(label: str, layout: Layout, tag: str | None) -> Source:
    desc, manifest = select_manifest(layout, tag)
    blob_path = {desc["digest"]: layout.blob(desc["digest"])}
    config_desc = _descriptor(label, manifest.get("config"), "manifest config")
    config_path = layout.blob(config_desc["digest"])
    config_bytes = read_verified(label, config_path, config_desc["digest"], config_desc["size"])
    blob_path[config_desc["digest"]] = config_path
    config = parse_json(label, config_bytes, f"config {config_desc['digest']}")
    raw_layers = manifest.get("layers")
    if not isinstance(raw_layers, list):
        raise InputError(f"{label}: malformed manifest {desc['digest']}: no layers list")
    layers: list[LayerBlob] = []
    for raw in raw_layers:
        d = _descriptor(label, raw, "manifest layer")
        path = layout.blob(d["digest"])
        blob_path[d["digest"]] = path
        layers.append(
            LayerBlob(
                path=path,
                media_type=d["mediaType"],
                digest=d["digest"],
                size=d["size"],
                annotations=d["annotations"],
            )
        )
    return Source(manifest, config, layers, blob_path, desc["digest"])


def _descriptor(label: str, raw: object, what: str) -> dict[str, Any]:
    """A checked descriptor: digest, size (int >= 0), mediaType str, annotations tuple."""
    if not isinstance(raw, dict):
        raise InputError(f"{label}: malformed {what} descriptor")
    parse_digest(label, raw.get("digest"))
    size = raw.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError(f"{label}: malformed {what} descriptor: bad size {size!r}")
    media_type = raw.get("mediaType", "")
    annotations = raw.get("annotations") or {}
    if not isinstance(media_type, str) or not isinstance(annotations, dict):
        raise InputError(f"{label}: malformed {what} descriptor")
    pairs = tuple(sorted((str(k), str(v)) for k, v in annotations.items()))
    return {"digest": raw["digest"], "size": size, "mediaType": media_type, "annotations": pairs}


def _assemble(label: str, source: Source, workdir: str, max_bytes: int) -> Image:
    if len(source.layers) > MAX_LAYERS:
        raise InputError(
            f"{label}: {len(source.layers)} layers, more than the {MAX_LAYERS} pkgchunk reads"
        )
    diff_ids = _diff_ids(label, source.config, len(source.layers))
    budget = _Counted(label, max_bytes)
    spool_dir = os.path.join(workdir, "layers")
    os.makedirs(spool_dir, exist_ok=True)
    infos: list[LayerInfo] = []
    tar_paths: list[str] = []
    # Layers are spooled (decompressed, verified) on worker threads, ahead of the
    # flattening: layer n+1 decompresses while layer n is parsed, and two layers
    # decompress at once. Results and errors are still taken in layer order.
    jobs = max(1, min(os.cpu_count() or 1, SPOOL_JOBS))
    pool = cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="pkgchunk-spool")
    spooled: dict[str, cf.Future[tuple[LayerInfo, str]]] = {}
    for n, blob in enumerate(source.layers, 1):
        key = blob.digest or blob.path
        if key not in spooled:
            dest = os.path.join(spool_dir, f"{n}.tar")
            name = blob.digest or os.path.relpath(blob.path, workdir)
            spooled[key] = pool.submit(
                spool, label, f"{label}: layer {n} ({name})", blob, dest, budget
            )

    def tars() -> Iterator[tuple[str, str]]:
        seen: set[str] = set()
        for n, blob in enumerate(source.layers, 1):
            key = blob.digest or blob.path
            info, tar_path = spooled[key].result()
            if key in seen:
                budget.take(os.path.getsize(tar_path))  # flattened again: it costs again
            seen.add(key)
            if diff_ids is not None and diff_ids[n - 1] != info.diff_id:
                raise InputError(
                    f"{label}: layer {n} ({info.digest}) has diff_id {info.diff_id},"
                    f" the config says {diff_ids[n - 1]}"
                )
            source.blob_path.setdefault(info.digest, blob.path)
            infos.append(info)
            tar_paths.append(tar_path)
            yield f"{label}: layer {n} ({info.digest})", tar_path

    try:
        tree = flatten(tars(), label=label)
    except BaseException:
        budget.stop()  # spools still running end at their next chunk
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if source.manifest is not None and source.manifest.get("layers") == []:
        # docker-archive: the synthesised manifest describes the layers as read
        source.manifest["layers"] = [
            {"mediaType": i.media_type, "digest": i.digest, "size": i.size} for i in infos
        ]
    return Image(
        ref=label,
        tree=tree,
        config=source.config,
        manifest=source.manifest,
        layers=infos,
        blob_path=source.blob_path,
        workdir=workdir,
        layer_tars=tar_paths,
    )


class _Stopped(InputError):
    """A spool that no longer matters (an earlier layer failed)."""


class _Counted(Budget):
    """The size budget shared by the spooling threads, also counting bytes for the
    progress line; once stopped, every spool still running fails at its next chunk."""

    def __init__(self, label: str, max_bytes: int) -> None:
        super().__init__(label, max_bytes)
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def take(self, n: int) -> None:
        if self._stopped.is_set():
            raise _Stopped(f"{self.label}: stopped")
        with self._lock:
            super().take(n)
        progress.advance(n)

    def stop(self) -> None:
        self._stopped.set()


def _diff_ids(label: str, config: dict[str, Any], count: int) -> list[str] | None:
    rootfs = config.get("rootfs")
    if rootfs is None:
        return None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InputError(f"{label}: malformed config: rootfs.diff_ids is not a list of digests")
    if len(ids) != count:
        raise InputError(
            f"{label}: config lists {len(ids)} diff_ids but the manifest has {count} layers"
        )
    return list(ids)
