"""Tell cheaply that a layer cannot be one of the reusable blobs, before hashing all of it.

A layer is reused when its diff_id equals a reusable blob's, and learning the diff_id means
generating and hashing the whole tar once before compressing it. On a cold rechunk the only
candidates are the input's own layers, which a package plan practically never reproduces, so
that pass is wasted. Two tars that are equal start with the same bytes: when the first
:data:`PREFIX` bytes of a layer match no candidate's, the writer compresses straight away.
Only a candidate whose start cannot be read (or decoded) makes every layer take the full
pass, so the outcome is the same as always hashing first.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterable

from pkgchunk.errors import PkgchunkError
from pkgchunk.oci.blobs import open_blob
from pkgchunk.oci.decompress import decompressed, detect
from pkgchunk.oci.tarwrite import write_layer
from pkgchunk.tree import FileTree

#: Uncompressed bytes compared; a layer tar's first 64 KiB hold dozens of member headers.
PREFIX = 64 << 10

Key = tuple[int, bytes]


def key(start: bytes) -> Key:
    """What two equal tars have in common: the length and hash of their first PREFIX bytes."""
    data = start[:PREFIX]
    return len(data), hashlib.sha256(data).digest()


def blob_keys(paths: Iterable[str]) -> set[Key] | None:
    """The keys of the tars these compressed blobs hold; None when one cannot be read."""
    out: set[Key] = set()
    for path in paths:
        try:
            with open_blob(path) as f:  # a regular file only: a FIFO would hang us
                kind = detect(f.read(4))
                f.seek(0)
                parts: list[bytes] = []
                size = 0
                chunks = decompressed(f, kind, path)
                try:
                    for chunk in chunks:
                        parts.append(chunk)
                        size += len(chunk)
                        if size >= PREFIX:
                            break
                finally:
                    close = getattr(chunks, "close", None)  # a generator: stop decoding now
                    if close is not None:
                        close()
        except (OSError, PkgchunkError, ValueError):
            return None
        out.add(key(b"".join(parts)))
    return out


class _Enough(Exception):
    pass


class _Head:
    """Keeps the first PREFIX bytes written, then stops the writer."""

    def __init__(self, cancel: threading.Event, cancelled: type[Exception]) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self._cancel = cancel
        self._cancelled = cancelled

    def write(self, data: bytes, /) -> int:
        if self._cancel.is_set():
            raise self._cancelled
        self.parts.append(data)
        self.size += len(data)
        if self.size >= PREFIX:
            raise _Enough
        return len(data)


def layer_key(
    tree: FileTree,
    paths: Iterable[str],
    source_date_epoch: int | None,
    cancel: threading.Event,
    cancelled: type[Exception],
    whiteouts: Iterable[str] = (),
) -> Key:
    """The key of the layer tar ``write_layer`` would write, from its first bytes only."""
    head = _Head(cancel, cancelled)
    with contextlib.suppress(_Enough):
        write_layer(
            tree, paths, head, source_date_epoch=source_date_epoch, whiteouts=whiteouts
        )
    return key(b"".join(head.parts))
