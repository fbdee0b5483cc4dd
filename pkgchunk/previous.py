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

import os
import shutil
import tempfile
from dataclasses import dataclass, field

from pkgchunk.errors import InputError, PkgchunkError
from pkgchunk.io import fetch_source, open_manifest
from pkgchunk.oci.mediatypes import SAME_BYTES
from pkgchunk.oci.read import Source, config_labels
from pkgchunk.oci.spool import LayerBlob
from pkgchunk.oci.write import ReusableBlob
from pkgchunk.plan.record import BuildRecord
from pkgchunk.refs import REMOTE_TRANSPORTS, ImageRef, parse_ref
from pkgchunk.transport.skopeo import Side


@dataclass
class Previous:
    """A previous image's labels and reusable blobs (a context manager: archives are
    unpacked into a temporary directory that lives until ``close``)."""

    ref: str
    labels: dict[str, str]
    reuse: dict[str, ReusableBlob] = field(default_factory=dict)
    workdir: str | None = None
    #: The previous manifest's layer digests (also for a registry or store image, whose
    #: blobs are not fetched): a new layer with one of them is byte-identical, "reused".
    digests: frozenset[str] = frozenset()
    #: Its manifest digest and layer blobs (whose files exist only for a local image: a
    #: remote one is inspected, not fetched), for carrying unchanged entries forward.
    digest: str | None = None
    blobs: tuple[LayerBlob, ...] = ()
    image_ref: ImageRef | None = None
    #: The ``created_by`` of each layer's history entry, when the config has one per layer
    #: (a patch build writes them again for the layers it keeps).
    comments: tuple[str, ...] = ()
    _fetched: tuple[LayerBlob, ...] | None = field(default=None, repr=False)

    @property
    def record(self) -> BuildRecord:
        """What the previous build recorded (plan, history, mtime policy), decoded once."""
        return BuildRecord.from_labels(self.labels)

    def local_blobs(self) -> tuple[LayerBlob, ...]:
        """Its layer blobs as files on disk: a remote build is copied whole by skopeo (it
        has no single-blob fetch) into this build's work directory, once."""
        if self.image_ref is None or self.image_ref.transport not in REMOTE_TRANSPORTS:
            return self.blobs
        if self._fetched is None:
            assert self.workdir is not None
            where = os.path.join(self.workdir, "fetched")
            os.makedirs(where, exist_ok=True)
            fetched = fetch_source(self.image_ref, where)
            if len(fetched.layers) != len(self.blobs):
                raise PkgchunkError(f"{self.ref}: skopeo copied {len(fetched.layers)} layers,"
                                    f" its manifest has {len(self.blobs)}")
            self._fetched = tuple(fetched.layers)
        return self._fetched

    def close(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Previous:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _from_source(label: str, source: Source) -> tuple[dict[str, str], dict[str, ReusableBlob]]:
    labels = config_labels(source.config)
    rootfs = source.config.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    reuse: dict[str, ReusableBlob] = {}
    if isinstance(diff_ids, list) and len(diff_ids) == len(source.layers):
        for diff_id, blob in zip(diff_ids, source.layers, strict=True):
            if isinstance(diff_id, str) and blob.digest and blob.size is not None and blob.path:
                media_type = SAME_BYTES.get(blob.media_type, blob.media_type)
                reuse.setdefault(
                    diff_id,
                    ReusableBlob(blob.path, blob.digest, blob.size, media_type, blob.annotations),
                )
    return labels, reuse


def _comments(source: Source) -> tuple[str, ...]:
    history = source.config.get("history")
    if not isinstance(history, list):
        return ()
    out = [str(h.get("created_by", "")) for h in history
           if isinstance(h, dict) and not h.get("empty_layer")]
    return tuple(out) if len(out) == len(source.layers) else ()


def open_previous(ref: str | ImageRef, side: Side = "src") -> Previous:
    """Read ``ref``'s config and manifest (verified); raises InputError when unusable.

    ``side`` says whose registry options apply to a remote reference (``dest``: it is
    the destination being replaced)."""
    image_ref = parse_ref(ref) if isinstance(ref, str) else ref
    if image_ref.transport == "rootfs":
        raise InputError(f"{image_ref}: a previous build must be an image, not a rootfs")
    workdir = tempfile.mkdtemp(prefix="pkgchunk-prev-")
    try:
        source = open_manifest(image_ref, workdir, side)
        labels, reuse = _from_source(str(image_ref), source)
        digests = frozenset(b.digest for b in source.layers if b.digest)
        return Previous(
            str(image_ref), labels, reuse, workdir, digests, source.digest,
            tuple(source.layers), image_ref, _comments(source),
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
