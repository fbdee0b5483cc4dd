"""Rewrite an image with a given layering, through the real reader and writer: what the
writer tests need without the package planner (``pkgchunk.rechunk`` plans by package)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from pkgchunk.image import Image, LayerSpec
from pkgchunk.io import open_image, write_image
from pkgchunk.oci.write import WriteOptions, WriteResult
from pkgchunk.rechunk import source_blobs
from pkgchunk.refs import ImageRef, parse_ref
from tests.oci.topdir import by_top_dir

Planner = Callable[[Image], Sequence[LayerSpec]]


def rechunk(
    src: str | ImageRef,
    dest: str | ImageRef,
    *,
    plan: Planner | Sequence[LayerSpec] | None = None,
    max_layers: int = 64,
    options: WriteOptions | None = None,
    reuse_source: bool = True,
) -> WriteResult:
    """Rewrite ``src`` as ``dest`` with layers from ``plan`` (default: :func:`by_top_dir`)."""
    dest_ref = parse_ref(dest, output=True) if isinstance(dest, str) else dest
    opts = options or WriteOptions()
    with open_image(src) as image:
        if plan is None:
            specs: Sequence[LayerSpec] = by_top_dir(image.tree, max_layers)
        elif callable(plan):
            specs = plan(image)
        else:
            specs = plan
        if reuse_source:
            reuse = {**source_blobs(image), **opts.reuse}
            if reuse:
                opts = dataclasses.replace(opts, reuse=reuse)
        return write_image(image.tree, image.config, specs, dest_ref, opts)
