"""The one place where image readers and writers meet the transports.

Every reference is opened and written here by transport: OCI layouts and archives by
``oci/``, ``rootfs:`` by the root-filesystem reader, and ``containers-storage:`` and
``docker://`` through ``transport/`` (skopeo copies into or out of a temporary layout,
podman mounts). ``oci/`` therefore never knows about skopeo, and ``transport/`` never
reads or writes image bytes itself.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pkgchunk import progress
from pkgchunk.errors import InputError
from pkgchunk.image import Image, LayerSpec
from pkgchunk.oci.blobs import open_blob, parse_json
from pkgchunk.oci.decompress import decompressed, detect
from pkgchunk.oci.flatten import flatten
from pkgchunk.oci.read import Source, read_image, read_layers, read_source, read_stack
from pkgchunk.oci.rootfs import read_rootfs
from pkgchunk.oci.spool import LayerBlob
from pkgchunk.oci.store import DEFAULT_TAG
from pkgchunk.oci.write import WriteOptions, WriteResult
from pkgchunk.oci.write import write_image as write_local
from pkgchunk.refs import REMOTE_TRANSPORTS, ImageRef, parse_ref
from pkgchunk.transport import podman, skopeo
from pkgchunk.transport.remote import exists, inspect_source
from pkgchunk.transport.skopeo import Side, fetch
from pkgchunk.tree import FileTree

log = logging.getLogger(__name__)

#: Default bound on the uncompressed size of all layers (a decompression-bomb guard).
DEFAULT_MAX_BYTES = 64 << 30
MAX_BYTES_ENV = "PKGCHUNK_MAX_IMAGE_BYTES"


def default_max_bytes() -> int:
    """``$PKGCHUNK_MAX_IMAGE_BYTES`` or 64 GiB."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{MAX_BYTES_ENV}={text!r}: not a positive number of bytes")
    return value


def open_image(ref: str | ImageRef, *, max_bytes: int | None = None) -> Image:
    """Read and flatten an image; the caller closes it (it owns a temp dir of spooled layers).

    ``containers-storage:`` and ``docker://`` go through skopeo
    (see :mod:`pkgchunk.transport.skopeo`).
    """
    image_ref = parse_ref(ref) if isinstance(ref, str) else ref
    limit = default_max_bytes() if max_bytes is None else max_bytes
    if image_ref.transport == "rootfs":
        with progress.step(f"reading {image_ref}"):
            return read_rootfs(image_ref.path, ref=str(image_ref))
    if image_ref.transport in REMOTE_TRANSPORTS:
        with progress.step(f"reading {image_ref}"):
            return _open_remote(image_ref, max_bytes=limit)

    with progress.step(f"reading {image_ref}"):
        return read_image(image_ref, max_bytes=limit)


def open_stack(refs: Sequence[str | ImageRef], *, max_bytes: int | None = None) -> Image:
    """Several images stacked in order (base first) and flattened as one: what a
    Containerfile starting ``FROM`` the first and adding the others' layers would give.
    One reference is :func:`open_image`."""
    parsed = [parse_ref(r) if isinstance(r, str) else r for r in refs]
    if not parsed:
        raise InputError("no image to read")
    if len(parsed) == 1:
        return open_image(parsed[0], max_bytes=max_bytes)
    for r in parsed:
        if r.transport == "rootfs":
            raise InputError(f"{r}: a rootfs cannot be stacked with other images; make it an"
                             " image first (pkgchunk rechunk rootfs:DIR oci:DIR:TAG)")
    limit = default_max_bytes() if max_bytes is None else max_bytes

    cleanups: list[Callable[[], None]] = []
    try:
        local = []
        for r in parsed:
            if r.transport in REMOTE_TRANSPORTS:
                workdir = tempfile.mkdtemp(prefix="pkgchunk-fetch-")
                cleanups.append(functools.partial(shutil.rmtree, workdir, ignore_errors=True))
                local.append(fetch(r, workdir))
            else:
                local.append(r)
        label = " + ".join(str(r) for r in parsed)
        with progress.step(f"reading {label}"):
            image = read_stack(local, max_bytes=limit)
    except BaseException:
        for c in reversed(cleanups):
            c()
        raise
    image.ref = label
    image.tree.label = label
    image.cleanups.extend(cleanups)
    return image


def _open_remote(ref: ImageRef, *, max_bytes: int) -> Image:
    """A ``containers-storage:`` or ``docker://`` image: mounted in place with ``--mount``,
    else copied by skopeo into a temporary layout and read from there."""
    if ref.transport == "containers-storage" and skopeo.current().mount:
        mounted = podman.mount(ref)
        try:
            image = read_rootfs(mounted.path, ref=str(ref))
            image.config = parse_json(str(ref), mounted.config, "config")
        except BaseException:
            mounted.release()
            raise
        image.cleanups.append(mounted.release)
        return image
    workdir = tempfile.mkdtemp(prefix="pkgchunk-fetch-")
    try:
        image = read_image(fetch(ref, workdir), max_bytes=max_bytes)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    image.ref = str(ref)
    image.tree.label = str(ref)
    image.cleanups.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    return image


def open_manifest(ref: ImageRef, workdir: str, side: Side = "src") -> Source:
    """An image's manifest and config (verified), without reading its layers: ``skopeo
    inspect`` for a remote reference, the layout or archive itself otherwise."""
    if ref.transport in REMOTE_TRANSPORTS:
        return inspect_source(ref, workdir, side)
    return read_source(ref, workdir, max_bytes=default_max_bytes())


def base_tree(image: Image, layers: int) -> FileTree:
    """The image's bottom ``layers`` flattened alone (from the tars already spooled, so an
    untouched file has the same data location as in ``image.tree``)."""
    if layers > len(image.layer_tars):
        raise InputError(
            f"{image.ref}: has {len(image.layer_tars)} layers read, fewer than {layers}"
        )
    tars = image.layer_tars[:layers]
    return flatten(
        ((f"{image.ref}: layer {n}", t) for n, t in enumerate(tars, 1)), label=image.ref
    )


def layer_diff_id(path: str, label: str) -> str:
    """The sha256 of the tar a compressed (or plain) layer blob holds."""
    h = hashlib.sha256()
    try:
        with open_blob(path) as f:
            kind = detect(f.read(4))
            f.seek(0)
            for chunk in decompressed(f, kind, label):
                h.update(chunk)
    except OSError as err:
        raise InputError(f"{label}: {path}: {err.strerror or err}") from None
    return "sha256:" + h.hexdigest()


def open_blobs(ref: ImageRef, workdir: str) -> Source:
    """An image's manifest, config and layer blobs on local disk (verified, not spooled):
    a remote reference is copied into a layout under ``workdir`` by skopeo first."""
    if ref.transport == "rootfs":
        raise InputError(f"{ref}: a rootfs has no layers to keep")
    if ref.transport in REMOTE_TRANSPORTS:
        ref = fetch(ref, workdir)
    return read_source(ref, workdir, max_bytes=default_max_bytes())


def open_layers(label: str, blobs: Sequence[LayerBlob], *, max_bytes: int | None = None) -> Image:
    """Only these layer blobs of an image (files on disk), flattened in order: the part of a
    previous build worth reading (the caller closes it)."""
    limit = default_max_bytes() if max_bytes is None else max_bytes
    with progress.step(f"reading {len(blobs)} layers of {label}"):
        return read_layers(label, blobs, max_bytes=limit)


def fetch_source(ref: ImageRef, workdir: str) -> Source:
    """A remote image copied by skopeo into a layout under ``workdir``: manifest, config and
    layer blobs on disk (a previous build whose layers must be read)."""
    local = fetch(ref, workdir)
    return read_source(local, workdir, max_bytes=default_max_bytes())


def write_image(
    tree: FileTree,
    config: Mapping[str, Any],
    specs: Sequence[LayerSpec],
    dest: str | ImageRef,
    options: WriteOptions | None = None,
) -> WriteResult:
    """Write ``tree`` as layers ``specs`` to ``dest``, all or nothing.

    A remote destination is written as a temporary OCI layout and copied there by skopeo,
    so registries, credentials and storage drivers behave as the user's own skopeo says."""
    ref = parse_ref(dest, output=True) if isinstance(dest, str) else dest
    if ref.transport not in REMOTE_TRANSPORTS:
        return write_local(tree, config, specs, ref, options)
    skopeo.check_destination(ref)
    workdir = tempfile.mkdtemp(prefix="pkgchunk-push-")
    try:
        layout = ImageRef("oci", os.path.join(workdir, "layout"), skopeo.TAG)
        result = write_local(tree, config, specs, layout, options)
        stored = skopeo.push(layout, ref) or result.manifest_digest
        if stored != result.manifest_digest:
            log.info("%s: the destination stored manifest %s (written as %s)",
                     ref, stored, result.manifest_digest)
        return dataclasses.replace(result, ref=str(ref), manifest_digest=stored)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def has_tag(dest: ImageRef) -> bool:
    """Whether DEST already holds an image at DEST's name (the automatic previous build):
    an ``oci:`` layout with that tag, or a registry/storage image skopeo finds. A layout
    we cannot parse is left for the writer to refuse."""
    if dest.transport in REMOTE_TRANSPORTS:
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
        return DEFAULT_TAG in names or len(manifests) == 1
    return dest.tag in names
