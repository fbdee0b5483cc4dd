"""``pkgchunk gc oci:DIR``: remove the blobs a reused layout no longer references."""

from __future__ import annotations

from pkgchunk.errors import InputError
from pkgchunk.oci.store import Garbage, collect_garbage
from pkgchunk.refs import parse_ref


def gc_layout(ref: str, *, dry_run: bool = False) -> Garbage:
    """Collect ``oci:DIR``'s unreferenced blobs (every tag in the layout counts)."""
    image_ref = parse_ref(ref)
    if image_ref.transport != "oci" or image_ref.tag is not None:
        raise InputError(f"{ref}: gc takes a layout, oci:DIR (every tag in it is kept)")
    return collect_garbage(image_ref.path, str(image_ref), dry_run=dry_run)
