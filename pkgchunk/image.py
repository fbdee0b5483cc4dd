"""A source image as the later stages see it (flattened tree, config, its layers), and
what the writer is asked to write (:class:`LayerSpec`).

Readers (``oci/read.py``, ``oci/rootfs.py``) produce an :class:`Image`; it owns the
temporary directory holding spooled layers, so use it as a context manager. The planner
produces LayerSpecs; both live here so that neither stage imports the other.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pkgchunk.tree import FileTree


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One output layer. ``paths`` are tree paths it holds; the writer adds each
    parent directory the layer needs (with that directory's real metadata).

    ``annotations`` go on the layer descriptor; ``comment`` becomes the history
    entry's ``created_by`` (what the layer holds, for humans).
    """

    name: str
    paths: tuple[str, ...]
    annotations: tuple[tuple[str, str], ...] = ()
    comment: str = ""
    #: Paths of lower layers this layer deletes (written as ``.wh.NAME`` entries): a layer
    #: written above layers kept as they are (``--keep-base``) removes base files this way.
    whiteouts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """One layer of the source manifest (needed to reuse unchanged blobs)."""

    digest: str
    media_type: str
    size: int
    diff_id: str
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass
class Image:
    """A flattened image. ``config`` is the OCI image config JSON (a minimal one for rootfs).

    ``blob_path`` maps a blob digest of the source to a readable file on disk, so
    the writer can copy an unchanged compressed layer byte for byte.
    """

    ref: str
    tree: FileTree
    config: dict[str, Any]
    manifest: dict[str, Any] | None = None
    layers: list[LayerInfo] = field(default_factory=list)
    blob_path: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    #: The uncompressed tar of each layer, in layer order (empty for a rootfs): what
    #: ``io.base_tree`` flattens again to see the image as its bottom layers alone.
    layer_tars: list[str] = field(default_factory=list)
    #: Run by close(), last first: what else the tree's data lives in (a fetched layout,
    #: a mounted container image).
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        while self.cleanups:
            self.cleanups.pop()()

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def labels(self) -> dict[str, str]:
        cfg = self.config.get("config") or {}
        labels = cfg.get("Labels") or {}
        return dict(labels)
