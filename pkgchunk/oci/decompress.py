"""Decompress layer blobs (gzip, zstd or plain tar, told apart by their magic bytes).

Both decoders stream with bounded output per step, and both notice a stream that
stops early: Python's gzip and zstandard readers would return a short layer
without complaint.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO, Protocol

import zstandard

from pkgchunk.errors import InputError
from pkgchunk.oci.mediatypes import Compression


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = 0xFD2FB528
OUT_CHUNK = 1 << 20
_IN_CHUNK = 1 << 16


def detect(head: bytes) -> Compression:
    """What a blob is, from its first bytes; the media type is only a hint."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if len(head) >= 4:
        magic = struct.unpack("<I", head[:4])[0]
        if magic == ZSTD_MAGIC or (magic & 0xFFFFFFF0) == 0x184D2A50:
            return "zstd"
    return "none"


def decompressed(raw: Reader, kind: Compression, label: str) -> Iterator[bytes]:
    """The uncompressed bytes of ``raw`` in chunks of at most ~1 MiB."""
    if kind == "gzip":
        return _gunzip(raw, label)
    if kind == "zstd":
        return _unzstd(raw, label)
    return iter(lambda: raw.read(OUT_CHUNK), b"")


def _gunzip(raw: Reader, label: str) -> Iterator[bytes]:
    """Multi-member gzip (as pigz/estargz write); zero padding after the last member is allowed."""
    d = zlib.decompressobj(31)
    fresh = True  # this member has seen no input yet
    members = 0
    padding = False
    try:
        while True:
            buf = raw.read(_IN_CHUNK)
            if not buf:
                break
            while buf:
                if padding:
                    if buf.strip(b"\0"):
                        raise InputError(f"{label}: trailing garbage after gzip data")
                    break
                fresh = False
                out = d.decompress(buf, OUT_CHUNK)
                buf = d.unconsumed_tail
                if out:
                    yield out
                while len(out) == OUT_CHUNK and not buf and not d.eof:
                    out = d.decompress(b"", OUT_CHUNK)
                    if out:
                        yield out
                if d.eof:
                    members += 1
                    buf = d.unused_data + d.unconsumed_tail
                    d = zlib.decompressobj(31)
                    fresh = True
                    if buf[:1] == b"\0":
                        padding = True
    except zlib.error as err:
        raise InputError(f"{label}: corrupt gzip data: {err}") from None
    if not (members and (fresh or padding)):
        raise InputError(f"{label}: truncated gzip data")


def _unzstd(raw: Reader, label: str) -> Iterator[bytes]:
    reader = zstandard.ZstdDecompressor().stream_reader(
        raw,  # type: ignore[arg-type]  # it only calls read()
        read_size=_IN_CHUNK, read_across_frames=True, closefd=False
    )
    try:
        while True:
            out = reader.read(OUT_CHUNK)
            if not out:
                break
            yield out
    except zstandard.ZstdError as err:
        raise InputError(f"{label}: corrupt zstd data: {err}") from None


def check_zstd_frames(f: BinaryIO, size: int, label: str) -> None:
    """Walk the frame and block headers (seeking over contents) to find a cut-off stream.

    zstandard's reader ends quietly when the input stops mid-frame, so without
    this a truncated layer would just look shorter.
    """
    pos = 0
    frames = 0

    def need(n: int, what: str) -> bytes:
        f.seek(pos)
        data = f.read(n)
        if len(data) != n:
            raise InputError(f"{label}: truncated zstd data ({what} at offset {pos})")
        return data

    while pos < size:
        (magic,) = struct.unpack("<I", need(4, "frame magic"))
        if (magic & 0xFFFFFFF0) == 0x184D2A50:
            pos += 4
            (length,) = struct.unpack("<I", need(4, "skippable frame size"))
            pos += 4 + length
            if pos > size:
                raise InputError(f"{label}: truncated zstd data (skippable frame)")
            continue
        if magic != ZSTD_MAGIC:
            raise InputError(f"{label}: corrupt zstd data: bad frame magic at offset {pos}")
        pos += 4
        fhd = need(1, "frame header")[0]
        if fhd & 0x08:
            raise InputError(f"{label}: corrupt zstd data: reserved bit set at offset {pos}")
        single = bool(fhd & 0x20)
        fcs_flag = fhd >> 6
        fcs = (1 if single else 0) if fcs_flag == 0 else (2, 4, 8)[fcs_flag - 1]
        pos += 1 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
        while True:
            header = need(3, "block header")
            value = header[0] | header[1] << 8 | header[2] << 16
            last, btype, bsize = value & 1, (value >> 1) & 3, value >> 3
            if btype == 3:
                raise InputError(f"{label}: corrupt zstd data: reserved block type at {pos}")
            pos += 3 + (1 if btype == 1 else bsize)
            if pos > size:
                raise InputError(f"{label}: truncated zstd data (block at offset {pos})")
            if last:
                break
        if fhd & 0x04:
            pos += 4
        if pos > size:
            raise InputError(f"{label}: truncated zstd data (frame checksum)")
        frames += 1
    if not frames:
        raise InputError(f"{label}: truncated zstd data (no frame)")
