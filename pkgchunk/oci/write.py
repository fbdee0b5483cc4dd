"""Write a FileTree as an image: reproducible layers, the input's config, and an atomic commit.

Layers are compressed in parallel (zlib and zstandard release the GIL), each one
streamed from the tree through the tar writer, a sha256 of the tar (its diff_id),
the compressor and a sha256 of the blob straight into a temp file: no layer is
ever held in memory. ``oci:`` destinations get blobs first and index.json last;
archives are staged next to the target and renamed into place at the end.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from pkgchunk import progress
from pkgchunk.errors import OutputError
from pkgchunk.image import LayerSpec
from pkgchunk.oci import reuse, zstdchunked
from pkgchunk.oci.archivewrite import archive_members, docker_repo_tag, pack
from pkgchunk.oci.compress import (
    LAYER_MEDIA_TYPES,
    Compression,
    HashingSink,
    Writable,
    check_level,
    compressor,
)
from pkgchunk.oci.mediatypes import OCI_CONFIG, OCI_MANIFEST
from pkgchunk.oci.store import (
    DEFAULT_TAG,
    FILE_MODE,
    BlobStore,
    Descriptor,
    add_to_index,
    canonical_json,
    init_layout,
    read_index,
    remove_new_layout,
)
from pkgchunk.oci.tarwrite import check_specs, write_layer
from pkgchunk.refs import ImageRef, parse_ref
from pkgchunk.tree import FileTree

#: The layer descriptor annotation naming the LayerSpec a layer was written from.
LAYER_ANNOTATION = "org.pkgchunk.layer"
WRITABLE_TRANSPORTS = ("oci", "oci-archive", "docker-archive")


@dataclass(frozen=True, slots=True)
class ReusableBlob:
    """An existing compressed layer blob whose uncompressed tar has a known diff_id."""

    path: str
    digest: str
    size: int
    media_type: str
    #: The blob's descriptor annotations (zstd:chunked ones travel with the bytes).
    annotations: tuple[tuple[str, str], ...] = ()


def _blob_fits(blob: ReusableBlob, media_type: str, compression: Compression) -> bool:
    """A zstd:chunked layer reuses only a blob written as zstd:chunked (its TOC annotations
    say so); any tar+zstd blob is fine for plain zstd."""
    if blob.media_type != media_type:
        return False
    return compression != "zstd:chunked" or any(
        k == zstdchunked.CHECKSUM_KEY for k, _ in blob.annotations
    )


def _chunked_annotations(blob: ReusableBlob) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in blob.annotations if k in zstdchunked.ANNOTATION_KEYS)


@dataclass(frozen=True, slots=True)
class KeptLayer:
    """A layer written as it is, below the planned ones (``--keep-base``): its blob is
    copied byte for byte and its descriptor keeps its own annotations."""

    blob: ReusableBlob
    diff_id: str
    annotations: tuple[tuple[str, str], ...] = ()
    comment: str = ""


@dataclass(frozen=True)
class WriteOptions:
    """How to write. ``reuse`` maps diff_id -> blob to copy byte for byte instead of
    compressing again (so digests cannot drift with a compressor version);
    ``labels`` are added to the config's Labels."""

    compression: Compression = "gzip"
    level: int | None = None
    source_date_epoch: int | None = None
    jobs: int | None = None
    reuse: Mapping[str, ReusableBlob] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Layers copied unchanged at the bottom of the image (a base kept byte for byte).
    base: tuple[KeptLayer, ...] = ()


@dataclass(frozen=True, slots=True)
class WrittenLayer:
    name: str
    comment: str
    files: int
    members: int
    media_type: str
    digest: str
    size: int
    diff_id: str
    tar_size: int
    reused: bool = False
    annotations: tuple[tuple[str, str], ...] = ()
    #: Copied from a kept base layer (its descriptor is written as the base had it).
    base: bool = False


@dataclass(frozen=True, slots=True)
class WriteResult:
    ref: str
    manifest_digest: str
    config_digest: str
    layers: tuple[WrittenLayer, ...]


def write_image(
    tree: FileTree,
    config: Mapping[str, Any],
    specs: Sequence[LayerSpec],
    dest: str | ImageRef,
    options: WriteOptions | None = None,
) -> WriteResult:
    """Write ``tree`` as layers ``specs`` with ``config`` to ``dest``; all or nothing."""
    opts = options or WriteOptions()
    ref = parse_ref(dest, output=True) if isinstance(dest, str) else dest
    label = str(ref)
    if ref.transport not in WRITABLE_TRANSPORTS:
        raise OutputError(
            f"{label}: cannot write {ref.transport}: images; write oci:DIR:TAG and "
            f"skopeo copy it from there"
        )
    try:
        check_level(opts.compression, opts.level)
    except ValueError as err:
        raise OutputError(f"{label}: {err}") from None
    check_specs(tree, specs, label)
    if ref.transport == "oci":
        return _write_oci(tree, config, specs, ref, opts)
    return _write_archive(tree, config, specs, ref, opts)


def _write_oci(
    tree: FileTree,
    config: Mapping[str, Any],
    specs: Sequence[LayerSpec],
    ref: ImageRef,
    opts: WriteOptions,
) -> WriteResult:
    label = str(ref)
    created = init_layout(ref.path, label)
    store: BlobStore | None = None
    try:
        read_index(ref.path, label)  # a broken index.json fails now, before any work
        store = BlobStore(ref.path, label)
        layers = copy_base(store, opts.base, label) + write_layers(store, tree, specs, opts)
        cdesc, mdesc = _put_config_manifest(store, config, layers, opts)
        needed = [cdesc.digest, mdesc.digest, *(lay.digest for lay in layers)]
        tag = ref.tag if ref.tag is not None else DEFAULT_TAG
        add_to_index(ref.path, mdesc, tag, label, needed)
        store.keep()
    except BaseException as err:
        if store is not None:
            store.rollback()
        if created is not None:
            remove_new_layout(ref.path, created, label)
        _reraise(label, err)
    return WriteResult(label, mdesc.digest, cdesc.digest, tuple(layers))


def _write_archive(
    tree: FileTree,
    config: Mapping[str, Any],
    specs: Sequence[LayerSpec],
    ref: ImageRef,
    opts: WriteOptions,
) -> WriteResult:
    label = str(ref)
    target = os.path.abspath(ref.path)
    directory, base = os.path.split(target)
    if os.path.isdir(target):
        raise OutputError(f"{label}: {ref.path} is a directory")
    if ref.transport == "docker-archive":
        docker_repo_tag(label, ref.tag)  # refuse a bad name before any work
    staging: str | None = None
    tmp_archive: str | None = None
    try:
        staging = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=directory)
        store = BlobStore(staging, label, shared=False)
        layers = copy_base(store, opts.base, label) + write_layers(store, tree, specs, opts)
        cdesc, mdesc = _put_config_manifest(store, config, layers, opts)
        fd, tmp_archive = tempfile.mkstemp(prefix=f"{base}.tmp-", dir=directory)
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            members = archive_members(
                ref.transport, store, cdesc, mdesc, [lay.digest for lay in layers], ref.tag, label
            )
            pack(out, members)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_archive, target)
        tmp_archive = None
    except BaseException as err:
        if tmp_archive is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_archive)
        _reraise(label, err)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return WriteResult(label, mdesc.digest, cdesc.digest, tuple(layers))


def _reraise(label: str, err: BaseException) -> NoReturn:
    if isinstance(err, OSError):
        where = err.filename if isinstance(err.filename, str) else label
        raise OutputError(f"{label}: cannot write {where}: {err.strerror or err}") from err
    raise err


class _Cancelled(Exception):
    pass


class _CancellableSink(HashingSink):
    """Stops a layer writer early once another layer has failed."""

    def __init__(self, out: Writable | None, cancel: threading.Event) -> None:
        super().__init__(out)
        self._cancel = cancel

    def write(self, data: bytes, /) -> int:
        if self._cancel.is_set():
            raise _Cancelled
        progress.advance(len(data))
        return super().write(data)


def copy_base(store: BlobStore, kept: Sequence[KeptLayer], label: str) -> list[WrittenLayer]:
    """Copy the kept base layers' blobs as they are (never decompressed or recompressed)."""
    out = []
    for n, layer in enumerate(kept, 1):
        blob = layer.blob
        if not store.copy_in(blob.path, blob.digest, blob.size):
            raise OutputError(
                f"{label}: base layer {n} ({blob.digest}): {blob.path} does not hold"
                f" {blob.size} bytes of that digest"
            )
        out.append(
            WrittenLayer(
                name=f"base/{n}", comment=layer.comment, files=0, members=0,
                media_type=blob.media_type, digest=blob.digest, size=blob.size,
                diff_id=layer.diff_id, tar_size=0, reused=True,
                annotations=layer.annotations, base=True,
            )
        )
    return out


def write_layers(
    store: BlobStore, tree: FileTree, specs: Sequence[LayerSpec], opts: WriteOptions
) -> list[WrittenLayer]:
    """Write every layer blob into ``store``, in parallel; results in ``specs`` order.

    The biggest layers start first, so the threads finish together instead of one of them
    compressing the largest layer alone at the end.
    """
    jobs = max(1, min(opts.jobs or os.cpu_count() or 1, len(specs) or 1))
    media_type = LAYER_MEDIA_TYPES[opts.compression]
    candidates = [
        b.path for b in opts.reuse.values() if _blob_fits(b, media_type, opts.compression)
    ]
    keys = reuse.blob_keys(candidates) if candidates else set()
    order = sorted(range(len(specs)), key=lambda i: -_weight(tree, specs[i]))
    cancel = threading.Event()
    pool = cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="pkgchunk-layer")
    try:
        futures: list[cf.Future[WrittenLayer] | None] = [None] * len(specs)
        for i in order:
            futures[i] = pool.submit(_write_one, store, tree, specs[i], opts, keys, cancel)
        submitted = [f for f in futures if f is not None]
        done, _ = cf.wait(submitted, return_when=cf.FIRST_EXCEPTION)
        for f in submitted:
            exc = f.exception() if f in done else None
            if exc is not None:
                raise exc
        return [f.result() for f in submitted]
    except BaseException:
        cancel.set()  # running layers stop at their next write
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _weight(tree: FileTree, spec: LayerSpec) -> int:
    """Roughly the work of writing a layer: its bytes plus a header block per path."""
    entries = tree.entries
    return sum(entries[p].size for p in spec.paths if p in entries) + 512 * len(spec.paths)


def _write_one(
    store: BlobStore,
    tree: FileTree,
    spec: LayerSpec,
    opts: WriteOptions,
    keys: set[reuse.Key] | None,
    cancel: threading.Event,
) -> WrittenLayer:
    media_type = LAYER_MEDIA_TYPES[opts.compression]
    epoch = opts.source_date_epoch

    def done(
        digest: str,
        size: int,
        diff: HashingSink,
        members: int,
        reused: bool,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> WrittenLayer:
        return WrittenLayer(
            name=spec.name,
            comment=spec.comment,
            files=len(spec.paths),
            members=members,
            media_type=media_type,
            digest=digest,
            size=size,
            diff_id=diff.digest,
            tar_size=diff.size,
            reused=reused,
            annotations=spec.annotations + extra,
        )

    # Learning the diff_id first costs a pass over the layer: skip it when the layer's
    # first bytes already differ from every reusable blob's (None: some blob unreadable).
    if keys is None or (
        keys
        and reuse.layer_key(tree, spec.paths, epoch, cancel, _Cancelled, spec.whiteouts)
        in keys
    ):
        diff = _CancellableSink(None, cancel)
        members = write_layer(
            tree, spec.paths, diff, source_date_epoch=epoch, whiteouts=spec.whiteouts
        )
        blob = opts.reuse.get(diff.digest)
        if (
            blob is not None
            and _blob_fits(blob, media_type, opts.compression)
            and store.copy_in(blob.path, blob.digest, blob.size)
        ):
            return done(blob.digest, blob.size, diff, members, True, _chunked_annotations(blob))
    tmp, f = store.temp()
    try:
        with f:
            blob_sink = HashingSink(f)
            comp = compressor(opts.compression, opts.level, blob_sink)
            diff = _CancellableSink(comp, cancel)
            members = write_layer(
                tree, spec.paths, diff, source_date_epoch=epoch, whiteouts=spec.whiteouts
            )
            comp.close()
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        store.discard(tmp)
        raise
    store.commit(tmp, blob_sink.digest)
    chunked = getattr(comp, "annotations", None) or {}  # zstd:chunked: where its TOC is
    return done(
        blob_sink.digest, blob_sink.size, diff, members, False, tuple(sorted(chunked.items()))
    )


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_config(
    config: Mapping[str, Any], layers: Sequence[WrittenLayer], opts: WriteOptions
) -> dict[str, Any]:
    """The input's config with our layers: new diff_ids and history, optional labels/created."""
    out = copy.deepcopy(dict(config))
    created = out.get("created")
    if opts.source_date_epoch is not None:
        created = _rfc3339(opts.source_date_epoch)
        out["created"] = created
    out["rootfs"] = {"type": "layers", "diff_ids": [lay.diff_id for lay in layers]}
    history: list[dict[str, Any]] = []
    for lay in layers:
        item: dict[str, Any] = {"created_by": lay.comment or f"pkgchunk layer {lay.name}"}
        if isinstance(created, str):
            item["created"] = created
        history.append(item)
    out["history"] = history
    if opts.labels:
        inner = out.get("config")
        if not isinstance(inner, dict):
            inner = {}
            out["config"] = inner
        labels = inner.get("Labels")
        merged = dict(labels) if isinstance(labels, dict) else {}
        merged.update(opts.labels)
        inner["Labels"] = merged
    return out


def _put_config_manifest(
    store: BlobStore,
    config: Mapping[str, Any],
    layers: Sequence[WrittenLayer],
    opts: WriteOptions,
) -> tuple[Descriptor, Descriptor]:
    cdesc = store.put_bytes(canonical_json(build_config(config, layers, opts)), OCI_CONFIG)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cdesc.to_json(),
        "layers": [_layer_descriptor(lay) for lay in layers],
    }
    mdesc = store.put_bytes(canonical_json(manifest), OCI_MANIFEST)
    return cdesc, mdesc


def _layer_descriptor(lay: WrittenLayer) -> dict[str, Any]:
    if lay.base:
        return Descriptor(lay.media_type, lay.digest, lay.size, lay.annotations).to_json()
    ann = {**dict(lay.annotations), LAYER_ANNOTATION: lay.name}
    return Descriptor(lay.media_type, lay.digest, lay.size, tuple(sorted(ann.items()))).to_json()
