"""Streaming layer compressors that hash what they emit.

Reproducibility is the point: the same tar bytes and options must give the same
blob on every run and machine. gzip gets mtime 0, no file name and a fixed
level; zstd gets a fixed level, no content size and no checksum, on a
single-threaded compressor (zstd's multi-threaded mode frames data differently),
so parallelism comes from compressing several layers at once instead.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import BinaryIO, Protocol

import zstandard

from pkgchunk.oci.mediatypes import COMPRESSIONS, LAYER_MEDIA_TYPES, Compression

__all__ = ["COMPRESSIONS", "LAYER_MEDIA_TYPES", "Compression"]

DEFAULT_LEVELS: dict[Compression, int] = {"gzip": 6, "zstd": 3, "zstd:chunked": 3, "none": 0}
LEVEL_RANGES: dict[Compression, tuple[int, int]] = {
    "gzip": (0, 9),
    "zstd": (1, 22),
    "zstd:chunked": (1, 22),
    "none": (0, 0),
}


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class HashingSink:
    """Counts and sha256-hashes every byte written, then passes it on (or drops it).

    ``tell`` lets :class:`tarfile.TarFile` write to it directly.
    """

    def __init__(self, out: Writable | None = None) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        n = len(data)
        if n:
            self._hash.update(data)
            self.size += n
            if self._out is not None:
                self._out.write(data)
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        """Nothing is buffered here (tarfile and gzip may call it)."""

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class Compressor(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def close(self) -> None: ...


class _Plain:
    def __init__(self, out: Writable) -> None:
        self._out = out

    def write(self, data: bytes, /) -> int:
        return self._out.write(data)

    def close(self) -> None:
        pass


class _Zstd:
    def __init__(self, out: Writable, level: int) -> None:
        cctx = zstandard.ZstdCompressor(
            level=level, write_checksum=False, write_content_size=False, threads=0
        )
        self._w = cctx.stream_writer(out, closefd=False)  # type: ignore[arg-type]

    def write(self, data: bytes, /) -> int:
        self._w.write(data)
        return len(data)

    def close(self) -> None:
        self._w.close()  # type: ignore[no-untyped-call]


def gzip_header(level: int) -> bytes:
    """Magic, deflate, no flags, mtime 0, XFL by level, OS "unknown": the bytes
    Python's gzip module writes with mtime=0 and no name, on every platform."""
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 0xFF])


class _Gzip:
    """One gzip member written by hand so every header byte is fixed."""

    def __init__(self, out: Writable, level: int) -> None:
        self._out = out
        self._z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8)
        self._crc = 0
        self._size = 0
        out.write(gzip_header(level))

    def write(self, data: bytes, /) -> int:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        chunk = self._z.compress(data)
        if chunk:
            self._out.write(chunk)
        return len(data)

    def close(self) -> None:
        self._out.write(self._z.flush())
        self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


def check_level(compression: Compression, level: int | None) -> int:
    """The effective level; a ValueError names the valid range."""
    if level is None:
        return DEFAULT_LEVELS[compression]
    lo, hi = LEVEL_RANGES[compression]
    if not lo <= level <= hi:
        raise ValueError(f"{compression} level must be {lo}..{hi}, not {level}")
    return level


def compressor(compression: Compression, level: int | None, out: Writable) -> Compressor:
    """A streaming compressor writing to ``out``; ``close()`` ends the stream (not ``out``)."""
    lvl = check_level(compression, level)
    if compression == "gzip":
        return _Gzip(out, lvl)
    if compression == "zstd":
        return _Zstd(out, lvl)
    if compression == "zstd:chunked":
        from pkgchunk.oci.zstdchunked import ZstdChunked

        return ZstdChunked(out, lvl)
    return _Plain(out)


def copy_hashing(src: BinaryIO, out: Writable, bufsize: int = 1 << 20) -> tuple[str, int]:
    """Copy ``src`` to ``out``; returns (sha256 digest, size) of what was copied."""
    sink = HashingSink(out)
    while True:
        chunk = src.read(bufsize)
        if not chunk:
            break
        sink.write(chunk)
    return sink.digest, sink.size
