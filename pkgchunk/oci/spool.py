"""Turn each layer blob into an uncompressed tar on disk, verifying it on the way.

One pass per blob: the compressed digest, the diff_id and the size budget are
all computed while the bytes stream through, so a blob is read exactly once.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from dataclasses import dataclass
from typing import BinaryIO

from pkgchunk.errors import InputError
from pkgchunk.image import LayerInfo
from pkgchunk.oci.blobs import CHUNK, HashingReader, check_digest, open_blob, parse_digest
from pkgchunk.oci.decompress import check_zstd_frames, decompressed, detect
from pkgchunk.oci.mediatypes import DOCKER_LAYER_TYPES


@dataclass(frozen=True, slots=True)
class LayerBlob:
    """A layer to read: ``digest``/``size`` None when the source does not say (docker-archive)."""

    path: str
    media_type: str
    digest: str | None = None
    size: int | None = None
    annotations: tuple[tuple[str, str], ...] = ()


class Budget:
    """Uncompressed bytes still allowed (the decompression-bomb guard)."""

    def __init__(self, label: str, max_bytes: int) -> None:
        self.label = label
        self.max_bytes = max_bytes
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.max_bytes:
            raise InputError(
                f"{self.label}: layers hold more than {self.max_bytes} uncompressed bytes"
                " (raise PKGCHUNK_MAX_IMAGE_BYTES if the image is real)"
            )




class _Pipe:
    """Hashes and writes the decompressed stream on a second thread.

    Decompressing, hashing and writing each release the GIL, so with the last two on
    their own thread a layer spools in the time of its decompression alone. At most
    ``_DEPTH`` chunks (~1 MiB each at most) wait in between.
    """

    _DEPTH = 16

    def __init__(self, out: BinaryIO, diff: hashlib._Hash) -> None:
        self._out = out
        self._diff = diff
        self._queue: queue.Queue[bytes | None] = queue.Queue(self._DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pkgchunk-spool", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:  # after a failure, only drain so put() never blocks
                try:
                    self._diff.update(chunk)
                    self._out.write(chunk)
                except BaseException as err:  # re-raised on the caller's thread
                    self._error = err

    def put(self, chunk: bytes) -> None:
        self.check()
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait until everything put is written (always call it, also on failure)."""
        self._queue.put(None)
        self._thread.join()

    def check(self) -> None:
        if self._error is not None:
            raise self._error


def spool(
    label: str, layer_label: str, blob: LayerBlob, dest: str, budget: Budget
) -> tuple[LayerInfo, str]:
    """Verify ``blob`` and return its LayerInfo and an uncompressed tar path.

    An uncompressed blob is used in place; a compressed one is written to ``dest``.
    ``label`` names the image (blob errors), ``layer_label`` the layer (stream errors).
    """
    alg = parse_digest(label, blob.digest)[0] if blob.digest else "sha256"
    try:
        f = open_blob(blob.path)
    except FileNotFoundError:
        raise InputError(f"{label}: blob {blob.digest or blob.path} is missing") from None
    except OSError as err:
        raise InputError(f"{label}: {blob.path}: {err.strerror or err}") from None
    try:
        with f:
            try:
                return _spool(label, layer_label, blob, f, alg, dest, budget)
            except InputError:
                # Bytes that do not decompress may just be the wrong bytes: when the blob
                # does not match its digest, that is the problem to name.
                if blob.digest is not None:
                    f.seek(0)
                    whole = HashingReader(f, alg)
                    whole.drain()
                    check_digest(label, blob.digest, whole, blob.size)
                raise
    except OSError as err:
        raise InputError(f"{layer_label}: {err.strerror or err}") from None


def _spool(
    label: str, layer_label: str, blob: LayerBlob, f: BinaryIO, alg: str, dest: str,
    budget: Budget,
) -> tuple[LayerInfo, str]:
    kind = detect(f.read(4))
    if kind == "zstd":
        check_zstd_frames(f, os.fstat(f.fileno()).st_size, layer_label)
    f.seek(0)
    reader = HashingReader(f, alg)
    diff = hashlib.sha256()
    if kind == "none":
        tar_path = blob.path
        # The layer is its own tar: with sha256 its digest is its diff_id.
        same = reader.hash.name == "sha256"
        for chunk in iter(lambda: reader.read(CHUNK), b""):
            budget.take(len(chunk))
            if not same:
                diff.update(chunk)
        if same:
            diff = reader.hash
    else:
        tar_path = dest
        with open(dest, "wb") as out:
            pipe = _Pipe(out, diff)
            try:
                for chunk in decompressed(reader, kind, layer_label):
                    budget.take(len(chunk))
                    pipe.put(chunk)
                reader.drain()
            finally:
                pipe.close()
            pipe.check()
    digest = blob.digest
    if digest is None:
        digest = f"sha256:{reader.hexdigest()}"
    else:
        check_digest(label, digest, reader, blob.size)
    media_type = blob.media_type or DOCKER_LAYER_TYPES[kind]
    info = LayerInfo(
        digest=digest,
        media_type=media_type,
        size=reader.count,
        diff_id=f"sha256:{diff.hexdigest()}",
        annotations=blob.annotations,
    )
    return info, tar_path
