"""Read the key/data pairs of a Berkeley DB *hash* file (rpm's old ``Packages``), no libdb.

Only what rpm databases use is supported: hash access method, unencrypted,
optional page checksums, either byte order, items stored on the page
(H_KEYDATA) or in overflow page chains (H_OFFPAGE). Duplicates never occur in
rpm's ``Packages`` and are reported as corruption.

Pages are scanned in file order rather than by walking buckets through the
``spares`` table: the table's meaning changed between hash versions, while the
page types did not, and libdb retypes every freed page P_INVALID, so the hash
pages in the file are exactly the live buckets and their overflow pages. Each
page is read at most once as a bucket page and at most once as an overflow page
(a page claimed by two chains is corruption), so the work is linear in the file
size whatever the page links say.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO, NoReturn

from pkgchunk.errors import PkgdbError

HASH_MAGIC = 0x061561
BTREE_MAGIC = 0x053162

# Page types (db_page.h).
P_INVALID, P_HASH_UNSORTED, P_OVERFLOW, P_HASHMETA, P_HASH = 0, 2, 7, 8, 13
# Hash item types.
H_KEYDATA, H_DUPLICATE, H_OFFPAGE, H_OFFDUP = 1, 2, 3, 4

PAGE_HEADER = 26  # lsn 8, pgno 4, prev 4, next 4, entries 2, hf_offset 2, level 1, type 1
CHKSUM_EXTRA = 6  # 2 bytes padding + 4-byte checksum when DBMETA_CHKSUM is set
DBMETA_CHKSUM = 0x01


class HashDb:
    """A Berkeley DB hash file opened for reading; ``name`` is used in errors.

    ``f`` must be seekable and stay open while :meth:`items` is iterated.
    """

    def __init__(self, f: BinaryIO, size: int, name: str) -> None:
        self.name = name
        self._f = f
        head = self._read(0, 0, min(size, 512))
        if len(head) < 512:
            self._fail(f"file of {size} bytes is too short for a Berkeley DB")
        for order in ("<", ">"):
            (magic,) = struct.unpack_from(order + "I", head, 12)
            if magic == HASH_MAGIC:
                break
            if magic == BTREE_MAGIC:
                self._fail("Berkeley DB btree, not the hash database rpm writes")
        else:
            self._fail("no Berkeley DB hash magic at offset 12")
        self.order = order
        self.big_endian = order == ">"
        version, pagesize = struct.unpack_from(order + "II", head, 16)
        encrypt, ptype, metaflags = head[24], head[25], head[26]
        (last_pgno,) = struct.unpack_from(order + "I", head, 32)
        if pagesize < 512 or pagesize > 65536 or pagesize & (pagesize - 1):
            self._fail(f"bad page size {pagesize}")
        if encrypt:
            self._fail("encrypted Berkeley DB is not supported")
        if ptype != P_HASHMETA:
            self._fail(f"meta page has type {ptype}, expected hash meta ({P_HASHMETA})")
        if size % pagesize:
            self._fail(f"size {size} is not a multiple of the page size {pagesize}")
        self.version = version
        self.pagesize = pagesize
        self.npages = size // pagesize
        if last_pgno >= self.npages:
            self._fail(f"truncated: last page is {last_pgno} but the file holds {self.npages}")
        self.last_pgno = last_pgno
        self._overhead = PAGE_HEADER + (CHKSUM_EXTRA if metaflags & DBMETA_CHKSUM else 0)
        self._overflow_used: set[int] = set()

    def _fail(self, problem: str) -> NoReturn:
        raise PkgdbError(f"{self.name}: {problem}")

    def _read(self, pgno: int, offset: int, n: int) -> bytes:
        try:
            self._f.seek(offset)
            data = self._f.read(n)
        except OSError as e:
            self._fail(f"page {pgno}: {e}")
        if len(data) != n:
            self._fail(f"page {pgno}: short read")
        return data

    def _page(self, pgno: int) -> bytes:
        if pgno < 1 or pgno >= self.npages:
            self._fail(f"page {pgno} is past the end of the file ({self.npages} pages)")
        return self._read(pgno, pgno * self.pagesize, self.pagesize)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, data) pair, in page order."""
        o = self.order
        for pgno in range(1, self.last_pgno + 1):
            page = self._page(pgno)
            if page[25] not in (P_HASH, P_HASH_UNSORTED):
                continue
            (own,) = struct.unpack_from(o + "I", page, 8)
            if own != pgno:
                self._fail(f"page {pgno}: header says it is page {own}")
            (entries,) = struct.unpack_from(o + "H", page, 20)
            if entries % 2:
                self._fail(f"page {pgno}: odd number of items ({entries})")
            if self._overhead + 2 * entries > self.pagesize:
                self._fail(f"page {pgno}: {entries} items cannot fit on a page")
            inp = struct.unpack_from(f"{o}{entries}H", page, self._overhead)
            for i in range(0, entries, 2):
                key = self._item(pgno, page, inp, i)
                data = self._item(pgno, page, inp, i + 1)
                yield key, data

    def _item(self, pgno: int, page: bytes, inp: tuple[int, ...], i: int) -> bytes:
        start = inp[i]
        end = self.pagesize if i == 0 else inp[i - 1]
        if start < self._overhead + 2 * len(inp) or start >= end or end > self.pagesize:
            self._fail(f"page {pgno}: item {i} has bad bounds {start}..{end}")
        kind = page[start]
        if kind == H_KEYDATA:
            return page[start + 1 : end]
        if kind == H_OFFPAGE:
            if end - start < 12:
                self._fail(f"page {pgno}: item {i}: overflow reference too short")
            first, total = struct.unpack_from(self.order + "II", page, start + 4)
            return self._overflow(pgno, first, total)
        if kind in (H_DUPLICATE, H_OFFDUP):
            self._fail(f"page {pgno}: item {i}: duplicate items are not used by rpm")
        self._fail(f"page {pgno}: item {i}: unknown item type {kind}")

    def _overflow(self, ref_pgno: int, pgno: int, total: int) -> bytes:
        """Concatenate an overflow chain; its pages may serve no other chain."""
        if total > self.npages * self.pagesize:
            self._fail(f"page {ref_pgno}: overflow item of {total} bytes exceeds the file")
        o = self.order
        chunks: list[bytes] = []
        got = 0
        while pgno:
            if pgno in self._overflow_used:
                self._fail(f"overflow page {pgno} is linked twice (loop or shared chain)")
            self._overflow_used.add(pgno)
            page = self._page(pgno)
            if page[25] != P_OVERFLOW:
                self._fail(f"page {pgno}: type {page[25]} in an overflow chain")
            (own, nxt) = struct.unpack_from(o + "I4xI", page, 8)
            (length,) = struct.unpack_from(o + "H", page, 22)
            if own != pgno:
                self._fail(f"page {pgno}: header says it is page {own}")
            if self._overhead + length > self.pagesize or got + length > total:
                self._fail(f"page {pgno}: overflow length {length} is out of bounds")
            chunks.append(page[self._overhead : self._overhead + length])
            got += length
            pgno = nxt
        if got != total:
            self._fail(f"page {ref_pgno}: overflow chain holds {got} of {total} bytes")
        return b"".join(chunks)
