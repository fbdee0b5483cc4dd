"""The rechunk pipeline: open the source, plan layers, write the destination.

The plan is whatever the caller passes — a planner function of the image or a
ready list of LayerSpec — so the placeholder grouping and the package planner
plug in the same way. The writer refuses a plan that does not cover every path
exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .compress import LAYER_MEDIA_TYPES
from .grouping import by_top_dir
from .image import Image
from .layers import LayerSpec
from .load import open_image
from .oci.write import ReusableBlob, WriteOptions, WriteResult, write_image
from .refs import ImageRef, parse_ref

Planner = Callable[[Image], Sequence[LayerSpec]]

DEFAULT_MAX_LAYERS = 64

#: Docker media types whose blobs are byte-compatible with an OCI layer type.
_SAME_BYTES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": LAYER_MEDIA_TYPES["gzip"],
    "application/vnd.docker.image.rootfs.diff.tar.zstd": LAYER_MEDIA_TYPES["zstd"],
    "application/vnd.docker.image.rootfs.diff.tar": LAYER_MEDIA_TYPES["none"],
}


def source_blobs(image: Image) -> dict[str, ReusableBlob]:
    """diff_id -> compressed blob of the source, so an unchanged layer is copied, not redone."""
    out: dict[str, ReusableBlob] = {}
    for layer in image.layers:
        path = image.blob_path.get(layer.digest)
        if path is None or not layer.diff_id:
            continue
        media_type = _SAME_BYTES.get(layer.media_type, layer.media_type)
        out.setdefault(layer.diff_id, ReusableBlob(path, layer.digest, layer.size, media_type))
    return out


def rechunk(
    src: str | ImageRef,
    dest: str | ImageRef,
    *,
    plan: Planner | Sequence[LayerSpec] | None = None,
    max_layers: int = DEFAULT_MAX_LAYERS,
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
                opts = WriteOptions(
                    compression=opts.compression,
                    level=opts.level,
                    source_date_epoch=opts.source_date_epoch,
                    jobs=opts.jobs,
                    reuse=reuse,
                    labels=opts.labels,
                )
        return write_image(image.tree, image.config, specs, dest_ref, opts)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def layer_table(result: WriteResult) -> str:
    """The human summary: one row per layer, then the totals and the manifest digest."""
    rows = [("LAYER", "FILES", "SIZE", "DIGEST", "")]
    for lay in result.layers:
        short = lay.digest.partition(":")[2][:12]
        rows.append(
            (lay.name, str(lay.files), human_size(lay.size), short, "reused" if lay.reused else "")
        )
    files = sum(lay.files for lay in result.layers)
    size = sum(lay.size for lay in result.layers)
    rows.append(("total", str(files), human_size(size), f"{len(result.layers)} layers", ""))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for name, nfiles, sz, digest, note in rows:
        line = (
            f"{name:<{width[0]}}  {nfiles:>{width[1]}}  {sz:>{width[2]}}  "
            f"{digest:<{width[3]}}  {note}"
        )
        lines.append(line.rstrip())
    lines.append(f"{result.ref}: manifest {result.manifest_digest}")
    return "\n".join(lines)
