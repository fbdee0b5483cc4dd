"""Parse the RPM header blobs an rpmdb stores, and turn one into a :class:`Package`.

Why not ``rpmfile``: its parser is written for whole ``.rpm`` files and trusts
its input. On a db blob (no lead, no header magic) it would need a fake magic
prefix, and even then it reads ``num_entries`` index entries without bounding
them, validates with ``assert`` (gone under ``python -O``), has no INT64 type
(LONGFILESIZES/LONGSIZE come back as a placeholder string), lets ``ValueError``
/``struct.error`` escape on bad offsets, and silently returns fewer strings than
the count says. None of that is fixable with a small adapter, so this module
parses the format itself, lazily (only the tags we use are decoded), with every
count and offset checked against the blob before anything is sliced or allocated.

Blob layout (all big-endian): ``il`` (entry count) and ``dl`` (data length), ``il``
16-byte index entries ``(tag, type, offset, count)``, then ``dl`` bytes of data.
The first entry of a db blob is usually a region tag (63, immutable) whose data is
a trailer entry with a negative offset giving the region size; entries after the
region were added at install time and replace region entries with the same tag.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NoReturn

from pkgchunk.errors import PkgdbError
from pkgchunk.pkgdb.model import MAX_DB_FILES, MAX_DB_PATH_BYTES, Package, PkgFile

# rpm's own sanity limits on a header (hdrchkTags / hdrchkData).
MAX_ENTRIES = 0xFFFF
MAX_DATA = 0x0FFFFFFF

INDEX = struct.Struct(">iIii")
HEAD = struct.Struct(">ii")

# Data types.
T_NULL, T_CHAR, T_INT8, T_INT16, T_INT32, T_INT64 = 0, 1, 2, 3, 4, 5
T_STRING, T_BIN, T_STRING_ARRAY, T_I18NSTRING = 6, 7, 8, 9
_INT_FORMAT = {T_CHAR: "B", T_INT8: "B", T_INT16: "H", T_INT32: "I", T_INT64: "Q"}
_STRING_TYPES = (T_STRING, T_STRING_ARRAY, T_I18NSTRING)
_WIDTH = {T_CHAR: 1, T_INT8: 1, T_INT16: 2, T_INT32: 4, T_INT64: 8, T_BIN: 1}

# Region tags and the tags a package record is built from.
TAG_HEADERIMAGE, TAG_HEADERSIGNATURES, TAG_HEADERIMMUTABLE = 61, 62, 63
REGION_TAGS = (TAG_HEADERIMAGE, TAG_HEADERSIGNATURES, TAG_HEADERIMMUTABLE)
TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH = 1000, 1001, 1002, 1003
TAG_BUILDTIME, TAG_INSTALLTIME, TAG_SIZE, TAG_LICENSE = 1006, 1008, 1009, 1014
TAG_ARCH, TAG_OLDFILENAMES, TAG_FILESIZES, TAG_FILEMODES = 1022, 1027, 1028, 1030
TAG_FILEDIGESTS, TAG_FILEFLAGS, TAG_SOURCERPM = 1035, 1037, 1044
TAG_CHANGELOGTIME = 1080
TAG_DIRINDEXES, TAG_BASENAMES, TAG_DIRNAMES = 1116, 1117, 1118
TAG_LONGFILESIZES, TAG_LONGSIZE = 5008, 5009


@dataclass(frozen=True, slots=True)
class _Ent:
    type: int
    offset: int
    count: int


class Header:
    """Index of one header blob; values are decoded on demand, bounds-checked.

    ``where`` names the blob in error messages ('var/lib/rpm/Packages: package 12').
    """

    def __init__(self, blob: bytes, where: str) -> None:
        self.where = where
        self._blob = blob
        if len(blob) < HEAD.size:
            self._fail(f"header blob of {len(blob)} bytes is too short")
        il, dl = HEAD.unpack_from(blob, 0)
        if il < 1 or il > MAX_ENTRIES:
            self._fail(f"header index count {il} outside 1..{MAX_ENTRIES}")
        if dl < 0 or dl > MAX_DATA:
            self._fail(f"header data length {dl} outside 0..{MAX_DATA}")
        self._start = HEAD.size + il * INDEX.size
        if self._start + dl > len(blob):
            self._fail(
                f"header claims {il} entries and {dl} data bytes but the blob has {len(blob)}"
            )
        self._dl = dl
        raw = [INDEX.unpack_from(blob, HEAD.size + i * INDEX.size) for i in range(il)]
        self._check_region(raw)
        self._ents: dict[int, _Ent] = {}
        for tag, typ, off, count in raw:
            if typ > T_I18NSTRING:
                self._fail(f"tag {tag}: unknown data type {typ}")
            if off < 0 or off > dl:
                self._fail(f"tag {tag}: data offset {off} outside 0..{dl}")
            if count < 0 or (count == 0 and typ != T_NULL):
                self._fail(f"tag {tag}: bad count {count}")
            width = _WIDTH.get(typ)
            if width is not None and off + count * width > dl:
                self._fail(f"tag {tag}: {count} values at data offset {off} run past the data")
            # Later entries (added at install time) replace region entries.
            self._ents[tag] = _Ent(typ, off, count)

    def _fail(self, problem: str) -> NoReturn:
        raise PkgdbError(f"{self.where}: {problem}")

    def _check_region(self, raw: list[tuple[int, int, int, int]]) -> None:
        tag, typ, off, count = raw[0]
        if tag not in REGION_TAGS:
            return  # a legacy header without a region: every entry stands alone
        if typ != T_BIN or count != 16 or off < 0 or off + 16 > self._dl:
            self._fail(f"region tag {tag}: bad entry (type {typ}, offset {off}, count {count})")
        ttag, ttyp, toff, tcount = INDEX.unpack_from(self._blob, self._start + off)
        if ttag == TAG_HEADERIMAGE and tag == TAG_HEADERSIGNATURES:
            ttag = tag  # some old packages wrote the signature trailer this way
        size = -toff
        if ttag != tag or ttyp != T_BIN or tcount != 16 or size <= 0 or size % INDEX.size:
            self._fail(f"region tag {tag}: bad trailer")
        if size // INDEX.size > len(raw):
            self._fail(f"region tag {tag}: region of {size // INDEX.size} entries exceeds index")

    def __contains__(self, tag: int) -> bool:
        return tag in self._ents

    def ints(self, tag: int) -> tuple[int, ...] | None:
        """An integer array (any width), or None when the tag is absent."""
        ent = self._ents.get(tag)
        if ent is None:
            return None
        fmt = _INT_FORMAT.get(ent.type)
        if fmt is None:
            self._fail(f"tag {tag}: expected integers, found type {ent.type}")
        if ent.offset + ent.count * struct.calcsize(fmt) > self._dl:
            self._fail(f"tag {tag}: {ent.count} integers at {ent.offset} run past the data")
        return struct.unpack_from(f">{ent.count}{fmt}", self._blob, self._start + ent.offset)

    def scalar(self, tag: int) -> int | None:
        """The first integer of a tag, or None when absent."""
        vals = self.ints(tag)
        return vals[0] if vals else None

    def bin(self, tag: int) -> bytes | None:
        """Raw BIN data (e.g. SIGMD5), or None when the tag is absent."""
        ent = self._ents.get(tag)
        if ent is None:
            return None
        if ent.type != T_BIN:
            self._fail(f"tag {tag}: expected binary data, found type {ent.type}")
        if ent.offset + ent.count > self._dl:
            self._fail(f"tag {tag}: {ent.count} bytes at {ent.offset} run past the data")
        start = self._start + ent.offset
        return self._blob[start : start + ent.count]

    def strings(self, tag: int) -> list[str] | None:
        """A string array (a STRING is one element; I18NSTRING keeps every locale)."""
        ent = self._ents.get(tag)
        if ent is None:
            return None
        if ent.type not in _STRING_TYPES:
            self._fail(f"tag {tag}: expected strings, found type {ent.type}")
        count = 1 if ent.type == T_STRING else ent.count
        end = self._start + self._dl
        # Each string takes at least its NUL byte: a count above that is a lie.
        if count > self._dl - ent.offset:
            self._fail(f"tag {tag}: {count} strings cannot fit in the data")
        out: list[str] = []
        pos = self._start + ent.offset
        blob = self._blob
        for _ in range(count):
            nul = blob.find(b"\0", pos, end)
            if nul < 0:
                self._fail(f"tag {tag}: unterminated string at data offset {pos - self._start}")
            out.append(blob[pos:nul].decode("utf-8", "surrogateescape"))
            pos = nul + 1
        return out

    def string(self, tag: int) -> str | None:
        """A single string; for I18NSTRING the first (C locale) translation."""
        ent = self._ents.get(tag)
        if ent is None:
            return None
        if ent.type not in _STRING_TYPES:
            self._fail(f"tag {tag}: expected a string, found type {ent.type}")
        end = self._start + self._dl
        pos = self._start + ent.offset
        nul = self._blob.find(b"\0", pos, end)
        if nul < 0:
            self._fail(f"tag {tag}: unterminated string at data offset {ent.offset}")
        return self._blob[pos:nul].decode("utf-8", "surrogateescape")

    def files(self) -> tuple[PkgFile, ...]:
        """The file list with per-file size, full st_mode, digest and RPMFILE_* flags."""
        basenames = self.strings(TAG_BASENAMES)
        if basenames is not None:
            dirnames = self.strings(TAG_DIRNAMES) or []
            dirindexes = self.ints(TAG_DIRINDEXES) or ()
            if len(dirindexes) != len(basenames):
                self._fail(f"{len(dirindexes)} DIRINDEXES for {len(basenames)} BASENAMES")
            total = 0
            for base, di in zip(basenames, dirindexes, strict=True):
                if di >= len(dirnames):
                    self._fail(f"dirindex {di} out of range ({len(dirnames)} DIRNAMES)")
                total += len(dirnames[di]) + len(base)
            if len(basenames) > MAX_DB_FILES or total > MAX_DB_PATH_BYTES:
                self._fail(f"{len(basenames)} files with {total} bytes of paths is too many")
            paths = [dirnames[di] + base for base, di in zip(basenames, dirindexes, strict=True)]
        else:
            paths = self.strings(TAG_OLDFILENAMES) or []
        n = len(paths)
        if not n:
            return ()
        sizes = self._per_file(TAG_LONGFILESIZES, n)
        if sizes is None:
            sizes = self._per_file(TAG_FILESIZES, n)
        modes = self._per_file(TAG_FILEMODES, n)
        flags = self._per_file(TAG_FILEFLAGS, n)
        digests = self.strings(TAG_FILEDIGESTS)
        if digests is not None and len(digests) != n:
            self._fail(f"tag {TAG_FILEDIGESTS}: {len(digests)} entries for {n} files")
        return tuple(
            PkgFile(
                path=paths[i],
                size=sizes[i] if sizes else 0,
                mode=modes[i] if modes else 0,
                digest=digests[i] if digests else "",
                flags=flags[i] if flags else 0,
            )
            for i in range(n)
        )

    def _per_file(self, tag: int, n: int) -> tuple[int, ...] | None:
        vals = self.ints(tag)
        if vals is not None and len(vals) != n:
            self._fail(f"tag {tag}: {len(vals)} entries for {n} files")
        return vals


def source_name(sourcerpm: str | None, name: str) -> str:
    """'glibc-2.31-9.3.2.src.rpm' -> 'glibc'; a package without SOURCERPM is its own source."""
    if not sourcerpm:
        return name
    stem = sourcerpm
    for suffix in (".src.rpm", ".nosrc.rpm"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    parts = stem.rsplit("-", 2)
    return parts[0] if len(parts) == 3 and parts[0] else stem


def parse_package(blob: bytes, where: str, db: str) -> Package:
    """One :class:`Package` from a header blob; PkgdbError (naming ``where``) when corrupt."""
    h = Header(blob, where)
    name = h.string(TAG_NAME)
    if not name:
        raise PkgdbError(f"{where}: header has no NAME")
    size = h.scalar(TAG_LONGSIZE)
    if size is None:
        size = h.scalar(TAG_SIZE) or 0
    return Package(
        name=name,
        version=h.string(TAG_VERSION) or "",
        release=h.string(TAG_RELEASE) or "",
        epoch=h.scalar(TAG_EPOCH),
        arch=h.string(TAG_ARCH) or "",
        source=source_name(h.string(TAG_SOURCERPM), name),
        size=size,
        buildtime=h.scalar(TAG_BUILDTIME),
        installtime=h.scalar(TAG_INSTALLTIME),
        changelog_times=tuple(sorted(h.ints(TAG_CHANGELOGTIME) or (), reverse=True)),
        license=h.string(TAG_LICENSE) or "",
        files=h.files(),
        db=db,
    )
