"""Read the header blobs of rpm's ndb ``Packages.db`` (SUSE's default backend), no rpm.

Layout (all little-endian). The file starts with a 32-byte header: magic 'RpmP',
version 0, generation, number of slot pages, next package index. Slot pages
(4096 bytes each, the header occupying the first two 16-byte slots) hold slots
``('Slot', pkgidx, blkoff, blkcnt)``; pkgidx 0 is a free slot. A slot points at
``blkcnt`` 16-byte blocks starting at block ``blkoff``: a blob record of head
``('BlbS', pkgidx, generation, length)``, the header blob, zero padding, and a
12-byte tail ``(adler32 of head+blob+padding, length, 'BlbE')``.

Every slot is checked before its blob is read (inside the file, after the slot
pages, no overlap with another blob, head/tail/checksum consistent), so a hostile
file can make us read each byte at most once.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO, NoReturn

from pkgchunk.errors import PkgdbError

MAGIC = b"RpmP"
SLOT_MAGIC = b"Slot"
BLOB_MAGIC = b"BlbS"
TAIL_MAGIC = b"BlbE"
PAGE_SIZE = 4096
HEADER_SIZE = 32
SLOT = struct.Struct("<4sIII")
BLOB_HEAD = struct.Struct("<4sIII")
BLOB_TAIL = struct.Struct("<II4s")
BLK_SIZE = 16


def _fail(name: str, problem: str) -> NoReturn:
    raise PkgdbError(f"{name}: {problem}")


def _read(f: BinaryIO, name: str, offset: int, n: int) -> bytes:
    try:
        f.seek(offset)
        data = f.read(n)
    except OSError as e:
        _fail(name, f"offset {offset}: {e}")
    if len(data) != n:
        _fail(name, f"short read of {n} bytes at offset {offset}")
    return data


def iter_blobs(f: BinaryIO, size: int, name: str) -> Iterator[tuple[int, bytes]]:
    """Yield (pkgidx, header blob) for every used slot, in pkgidx order.

    ``f`` must be seekable; ``size`` is its length. Raises PkgdbError naming ``name``.
    """
    if size < HEADER_SIZE:
        _fail(name, f"file of {size} bytes is too short for an ndb database")
    head = _read(f, name, 0, HEADER_SIZE)
    magic, version, _generation, npages = struct.unpack_from("<4sIII", head)
    if magic != MAGIC:
        _fail(name, "no 'RpmP' magic: not an rpm ndb Packages.db")
    if version != 0:
        _fail(name, f"unsupported ndb version {version}")
    if npages < 1 or npages * PAGE_SIZE > size:
        _fail(name, f"{npages} slot pages do not fit in {size} bytes")
    slot_area = npages * PAGE_SIZE
    table = _read(f, name, 0, slot_area)
    slots: list[tuple[int, int, int]] = []  # (blkoff, blkcnt, pkgidx)
    seen: set[int] = set()
    for i in range(HEADER_SIZE // SLOT.size, slot_area // SLOT.size):
        smagic, pkgidx, blkoff, blkcnt = SLOT.unpack_from(table, i * SLOT.size)
        if smagic != SLOT_MAGIC:
            _fail(name, f"slot {i}: bad magic {smagic!r}")
        if not pkgidx:
            continue
        if pkgidx in seen:
            _fail(name, f"slot {i}: package index {pkgidx} appears twice")
        seen.add(pkgidx)
        start, end = blkoff * BLK_SIZE, (blkoff + blkcnt) * BLK_SIZE
        if start < slot_area or end > size or blkcnt * BLK_SIZE < BLOB_HEAD.size + BLOB_TAIL.size:
            _fail(name, f"package {pkgidx}: blob at blocks {blkoff}+{blkcnt} is out of bounds")
        slots.append((blkoff, blkcnt, pkgidx))
    slots.sort()
    for (off, cnt, idx), (noff, _, nidx) in itertools.pairwise(slots):
        if off + cnt > noff:
            _fail(name, f"package {idx}: blob overlaps the blob of package {nidx}")
    for blkoff, blkcnt, pkgidx in sorted(slots, key=lambda s: s[2]):
        yield pkgidx, _blob(f, name, pkgidx, blkoff * BLK_SIZE, blkcnt * BLK_SIZE)


def _blob(f: BinaryIO, name: str, pkgidx: int, start: int, span: int) -> bytes:
    record = _read(f, name, start, span)
    bmagic, bidx, _gen, length = BLOB_HEAD.unpack_from(record)
    where = f"package {pkgidx}"
    if bmagic != BLOB_MAGIC:
        _fail(name, f"{where}: bad blob magic {bmagic!r}")
    if bidx != pkgidx:
        _fail(name, f"{where}: blob belongs to package {bidx}")
    if BLOB_HEAD.size + length + BLOB_TAIL.size > span:
        _fail(name, f"{where}: blob length {length} exceeds its {span}-byte record")
    checksum, tlength, tmagic = BLOB_TAIL.unpack_from(record, span - BLOB_TAIL.size)
    if tmagic != TAIL_MAGIC or tlength != length:
        _fail(name, f"{where}: bad blob tail")
    if zlib.adler32(memoryview(record)[: span - BLOB_TAIL.size]) != checksum:
        _fail(name, f"{where}: blob checksum mismatch")
    return record[BLOB_HEAD.size : BLOB_HEAD.size + length]
