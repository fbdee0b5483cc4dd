"""zstd:chunked layers: ordinary zstd that a partial-pull client can fetch file by file.

Followed: containers/storage at commit 83cf57466529353aced8f1803f2302698e0b5cb7
(2025-08-29): ``docs/containers-storage-zstd-chunked.md``, ``pkg/chunked/internal/minimal``
(format, footer, annotation keys), ``pkg/chunked/compressor`` (chunking), and the reader in
``pkg/chunked`` (``unmarshalToc``, ``ensureTOCMatchesTarSplit``, ``mergeTocEntries``); the
tar-split stream as vbatts/tar-split writes it (``tar/asm``, ``tar/storage``); the
annotation keys and ``UID``/``GID``/``ModTime`` spellings of containers/storage 1.43
(podman 4.3). See docs/zstd-chunked.md.

The blob, front to back:

* the layer tar in zstd frames: the raw header bytes (with the previous member's padding)
  in frames of their own, every regular file's payload as one frame per chunk;
* a skippable frame holding the zstd-compressed JSON table of contents (TOC);
* a skippable frame holding the zstd-compressed tar-split stream;
* a skippable frame holding the 64-byte footer.

A plain zstd decoder skips the skippable frames and returns exactly the tar it was given,
so the diff_id is unchanged. The TOC must agree with the tar headers field for field
(newer clients refuse the pull otherwise), so both are derived here from the tar stream
itself, parsed the way Go's ``archive/tar`` parses it, never from our own tree model.

Chunking is that of the reference writer: a maximal run of at least 1 KiB of zeros is a
chunk of type ``zeros``; elsewhere, in files of at least :data:`ROLLSUM_MIN_FILE`, a chunk
ends after the byte where bup's rolling sum (64-byte window) has its low 16 bits all set.
Such files get the same chunks as podman/skopeo make, so a client matches chunks across
images from either writer; smaller files are one chunk between holes (the spec leaves the
cut points to the writer).

Everything is a function of the tar bytes alone (how they are split into ``write`` calls
does not matter), so an unchanged layer comes out byte for byte the same.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib
import io
import json
import posixpath
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, BinaryIO

import zstandard

from pkgchunk.errors import InputError, OutputError


def _optional(module: str) -> Any:
    """An accelerator module, or None: the pure-Python paths give the same bytes, slower."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


_fastcrc64: Any = _optional("fastcrc.crc64")
_np: Any = _optional("numpy")

#: Layer descriptor annotations, current names (containers/storage >= 1.50)...
CHECKSUM_KEY = "io.github.containers.zstd-chunked.manifest-checksum"
POSITION_KEY = "io.github.containers.zstd-chunked.manifest-position"
TARSPLIT_KEY = "io.github.containers.zstd-chunked.tarsplit-position"
#: ... and the names containers/storage 1.43 (podman 4.3) reads.
OLD_CHECKSUM_KEY = "io.containers.zstd-chunked.manifest-checksum"
OLD_POSITION_KEY = "io.containers.zstd-chunked.manifest-position"
ANNOTATION_KEYS = (CHECKSUM_KEY, POSITION_KEY, TARSPLIT_KEY, OLD_CHECKSUM_KEY, OLD_POSITION_KEY)

SKIPPABLE_MAGIC = b"\x50\x2a\x4d\x18"
FOOTER_MAGIC = b"GNUlInUx"
FOOTER_SIZE = 64
MANIFEST_TYPE_CRFS = 1

#: Chunking parameters of the reference writer.
HOLE_MIN = 1024
_WINDOW = 64
_CHAR_OFFSET = 31
_SPLIT_BITS = 16
#: s2 starts at this (a window of zeros); a split is where (s2 + weighted sum) & 0xffff is 0xffff.
_S2_START = _WINDOW * (_WINDOW - 1) * _CHAR_OFFSET
_TARGET = (0xFFFF - _S2_START) & 0xFFFF

#: Files smaller than this are cut only at holes, not by the rolling sum: most are below the
#: reference's 64 KiB average chunk anyway, and the sum costs more in Python than the
#: compression (files of 1 MiB and more hold ~40 % of a Debian image's bytes).
ROLLSUM_MIN_FILE = 1 << 20

#: Frames larger than this are compressed streaming, fed in pieces of this size.
FRAME_PIECE = 1 << 20
#: Header bytes gathered into one frame at most (any cut between headers is invisible).
META_FRAME = 1 << 20
#: Largest tar-split segment for trailing bytes, as tar-split reads them.
_SEGMENT = 1 << 20

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_HOLE = bytes(HOLE_MIN)
_NONZERO = re.compile(rb"[^\x00]")

#: Go archive/tar type flags -> TOC type names (minimal.TarTypes).
_TOC_TYPES = {
    b"0": "reg",
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "char",
    b"4": "block",
    b"5": "dir",
    b"6": "fifo",
}
#: Types whose size field does not count payload bytes (Go's isHeaderOnlyType).
_HEADER_ONLY = {b"1", b"2", b"3", b"4", b"5", b"6"}


# --- checksums -----------------------------------------------------------------------------

_CRC_TABLE: list[int] = []


def _crc64_py(data: bytes, crc: int = 0) -> int:
    """CRC-64/GO-ISO (Go's ``crc64.ISO``), bytewise; the reference for the fast path."""
    if not _CRC_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xD800000000000000 if c & 1 else c >> 1
            _CRC_TABLE.append(c)
    table = _CRC_TABLE
    c = crc ^ 0xFFFFFFFFFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFFFFFFFFFF


def crc64(data: bytes, crc: int = 0) -> int:
    """CRC-64/GO-ISO of ``data`` continuing from ``crc``: what tar-split stores per file."""
    if _fastcrc64 is not None:
        return int(_fastcrc64.go_iso(data, crc))
    return _crc64_py(data, crc)


# --- chunking ------------------------------------------------------------------------------

_KERNEL = sum((k + 1) << (24 * k) for k in range(_WINDOW))


def _splits_int(hist: bytes, data: bytes) -> list[int]:
    """Indexes i of ``data`` after which the rolling sum says split (``hist``: the 63 bytes
    before ``data``). The window's weighted sum is a convolution, done as one big-integer
    multiplication with 24-bit digits (no digit overflows: 255 * 2080 < 2**24)."""
    x = hist + data
    spaced = bytearray(3 * len(x))
    spaced[0::3] = x
    prod = (int.from_bytes(spaced, "little") * _KERNEL).to_bytes(3 * len(x) + 200, "little")
    pat = bytes((_TARGET & 0xFF, _TARGET >> 8))
    out = []
    lim = 3 * len(x)
    i = prod.find(pat, 3 * (_WINDOW - 1))
    while 0 <= i < lim:
        if i % 3 == 0:
            out.append(i // 3 - (_WINDOW - 1))
        i = prod.find(pat, i + 1)
    return out


def _splits_np(hist: bytes, data: bytes) -> list[int]:
    """As :func:`_splits_int`, vectorised. The weighted window sum at n is
    S2[n] - S2[n-64] - 64 * S1[n-64] (S1, S2 the first and second prefix sums, mod 2**16).
    With the bytes laid out as 64 rows (row c holds bytes c, 64 + c, ...), both prefix
    sums within each 64-byte block are 63 vector additions of one row to the next, and the
    sum for a byte in block r needs only blocks r and r-1:
    P2[c,r] - P2[c,r-1] - 64 * P1[c,r-1] + P2[63,r-1] + (c+1) * P1[63,r-1]."""
    np = _np
    x = b"\0" + hist + data  # 64 bytes before data: block 0 is history only
    rows = -(-len(x) // 64)
    flat = np.zeros(rows * 64, dtype=np.uint8)
    flat[: len(x)] = np.frombuffer(x, dtype=np.uint8)
    p1 = np.empty((64, rows), dtype=np.uint16)
    p1[:] = flat.reshape(rows, 64).T
    for i in range(1, 64):
        np.add(p1[i], p1[i - 1], out=p1[i])
    p2 = p1.copy()
    for i in range(1, 64):
        np.add(p2[i], p2[i - 1], out=p2[i])
    k = _np_weights() * p1[63]
    k += p2[63]
    p1 *= np.uint16(64)
    p1 += p2
    d = p2[:, 1:] - p1[:, :-1]
    d += k[:, :-1]
    hits = np.flatnonzero(d == np.uint16(_TARGET))
    col, prev_row = np.divmod(hits, rows - 1)
    return [int(i) for i in np.sort(prev_row * 64 + col) if i < len(data)]


def _np_weights() -> Any:
    return _np.arange(1, 65, dtype=_np.uint16)[:, None]


#: Below this many bytes the integer method wins (numpy's per-call cost dominates);
#: above it, numpy works in pieces of this size, which stay in the CPU cache.
_NP_PIECE = 128 << 10


def split_points(hist: bytes, data: bytes) -> list[int]:
    """Where the rolling sum splits ``data`` (indexes of the last byte of each chunk)."""
    if not data:
        return []
    hist = (bytes(_WINDOW - 1) + hist)[-(_WINDOW - 1) :]
    if _np is None or len(data) < _NP_PIECE // 8:
        return _splits_int(hist, data)
    out: list[int] = []
    for i in range(0, len(data), _NP_PIECE):
        piece = data[i : i + _NP_PIECE]
        out += [i + p for p in _splits_np(hist, piece)]
        hist = (hist + piece)[-(_WINDOW - 1) :]
    return out


class Chunker:
    """Cuts one file's content into chunks as it streams in.

    ``feed`` returns pieces ``(data, zeros, cut)``: bytes (or, for zeros, their count)
    that now certainly belong to the current chunk, and whether the chunk ends after
    them. A trailing run of zeros shorter than a hole is held back until it is known
    whether it grows into one.
    """

    def __init__(self, rolling: bool = True) -> None:
        self._rolling = rolling
        self._hist = b""  # the last 63 bytes handed out
        self._held = 0  # trailing zeros not handed out yet (< HOLE_MIN)
        self._in_hole = False

    def _remember(self, data: bytes | int) -> None:
        tail = bytes(min(data, _WINDOW - 1)) if isinstance(data, int) else data[-(_WINDOW - 1) :]
        self._hist = (self._hist + tail)[-(_WINDOW - 1) :]

    def feed(self, data: bytes, final: bool = False) -> list[tuple[bytes | int, bool, bool]]:
        out: list[tuple[bytes | int, bool, bool]] = []
        pos = 0
        if self._in_hole:
            m = _NONZERO.search(data)
            n = m.start() if m else len(data)
            if n:
                out.append((n, True, False))
                self._remember(n)
            if m is None and not final:
                return out
            out.append((0, True, True))
            self._in_hole = False
            pos = n
        if self._held:
            data = bytes(self._held) + data[pos:]
            self._held = 0
            pos = 0
        while pos < len(data):
            i = data.find(_HOLE, pos)
            if i < 0:
                end = len(data)
                if not final:
                    end = len(data.rstrip(b"\0"))
                    end = max(end, pos)
                    self._held = len(data) - end
                self._data(data[pos:end], out)
                pos = len(data)
                break
            self._data(data[pos:i], out)
            out.append((b"", False, True))  # a hole ends the data chunk before it
            m = _NONZERO.search(data, i + HOLE_MIN)
            j = m.start() if m else len(data)
            out.append((j - i, True, False))
            self._remember(j - i)
            if m is None and not final:
                self._in_hole = True
                return out
            out.append((0, True, True))
            pos = j
        if final:
            out.append((b"", False, True))
        return out

    def _data(self, region: bytes, out: list[tuple[bytes | int, bool, bool]]) -> None:
        if not region:
            return
        start = 0
        for p in split_points(self._hist, region) if self._rolling else ():
            out.append((region[start : p + 1], False, True))
            start = p + 1
        if start < len(region):
            out.append((region[start:], False, False))
        self._remember(region)


# --- tar headers, as Go's archive/tar reads them ---------------------------------------------


def _cstr(b: bytes) -> bytes:
    n = b.find(b"\0")
    return b if n < 0 else b[:n]


def _numeric(b: bytes) -> int:
    """Go's parseNumeric: base-256 when the top bit is set, else octal (spaces/NULs trimmed)."""
    if b and b[0] & 0x80:
        inv = 0xFF if b[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(b):
            c ^= inv
            if i == 0:
                c &= 0x7F
            x = x << 8 | c
        return -x - 1 if inv else x
    s = b.strip(b" \0")
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        raise OutputError(f"tar stream: bad numeric header field {b!r}") from None


def _pax_records(data: bytes) -> dict[str, bytes]:
    recs: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            break
        try:
            n = int(data[pos:sp])
        except ValueError:
            raise OutputError("tar stream: malformed PAX record") from None
        rec = data[sp + 1 : pos + n - 1]
        key, eq, value = rec.partition(b"=")
        if not eq or n <= 0:
            raise OutputError("tar stream: malformed PAX record")
        recs[key.decode("utf-8", "surrogateescape")] = value
        pos += n
    return recs


def _pax_time(v: bytes) -> tuple[int, int]:
    try:
        d = Decimal(v.decode("ascii"))
    except (InvalidOperation, UnicodeDecodeError):
        raise OutputError(f"tar stream: bad PAX time {v!r}") from None
    sec = int(d.to_integral_value(rounding="ROUND_FLOOR"))
    nsec = int((d - sec) * 1_000_000_000)
    return sec, nsec


@dataclass
class Member:
    """One tar entry with the fields the TOC shares with the header."""

    type: str
    name: str
    linkname: str
    mode: int
    size: int
    uid: int
    gid: int
    mtime: tuple[int, int]
    atime: tuple[int, int] | None
    ctime: tuple[int, int] | None
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes] = field(default_factory=dict)
    payload: int = 0


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        shown = raw.decode("utf-8", "backslashreplace")
        raise OutputError(
            f"{shown}: zstd:chunked cannot store a {what} that is not UTF-8 (the TOC is JSON); "
            "use --compression zstd"
        ) from None


def parse_member(block: bytes, pax: dict[str, bytes], longname: bytes | None,
                 longlink: bytes | None) -> Member:
    """The entry a final header block describes, with its PAX and GNU long-name extensions."""
    flag = block[156:157]
    magic, version = block[257:263], block[263:265]
    ustar = magic == b"ustar\0" and version == b"00"
    gnu = magic == b"ustar " and version == b" \0"
    name = _cstr(block[0:100])
    if ustar:
        prefix = _cstr(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    linkname = _cstr(block[157:257])
    if longname is not None:
        name = _cstr(longname)
    if longlink is not None:
        linkname = _cstr(longlink)
    mode = _numeric(block[100:108])
    uid, gid = _numeric(block[108:116]), _numeric(block[116:124])
    size = _numeric(block[124:136])
    mtime = (_numeric(block[136:148]), 0)
    atime = ctime = None
    devmajor = devminor = 0
    if ustar or gnu:
        devmajor, devminor = _numeric(block[329:337]), _numeric(block[337:345])
    if gnu:
        if block[345]:
            atime = (_numeric(block[345:357]), 0)
        if block[357]:
            ctime = (_numeric(block[357:369]), 0)
    xattrs: dict[str, bytes] = {}
    for key, value in pax.items():
        if key == "path":
            name = value
        elif key == "linkpath":
            linkname = value
        elif key in ("size", "uid", "gid"):
            try:
                num = int(value)
            except ValueError:
                raise OutputError(f"tar stream: bad PAX {key} {value!r}") from None
            if key == "size":
                size = num
            elif key == "uid":
                uid = num
            else:
                gid = num
        elif key == "mtime":
            mtime = _pax_time(value)
        elif key == "atime":
            atime = _pax_time(value)
        elif key == "ctime":
            ctime = _pax_time(value)
        elif key.startswith("SCHILY.xattr."):
            xattrs[key[len("SCHILY.xattr.") :]] = value
        elif key.startswith("GNU.sparse."):
            raise OutputError(f"{_show(name)}: zstd:chunked cannot store a sparse file")
    if flag == b"\0":
        flag = b"5" if name.endswith(b"/") else b"0"
    typ = _TOC_TYPES.get(flag)
    if typ is None:
        raise OutputError(
            f"{_show(name)}: zstd:chunked cannot store a tar entry of type {flag!r}"
        )
    return Member(
        type=typ,
        name=_text(name, "name"),
        linkname=_text(linkname, "link target"),
        mode=mode,
        size=size,
        uid=uid,
        gid=gid,
        mtime=mtime,
        atime=atime,
        ctime=ctime,
        devmajor=devmajor,
        devminor=devminor,
        xattrs=xattrs,
        payload=0 if flag in _HEADER_ONLY else size,
    )


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


# --- JSON ----------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=4096)
def rfc3339(t: tuple[int, int]) -> str:
    """Go's time.Time JSON form in UTC: RFC 3339 with the fraction's trailing zeros cut."""
    sec, nsec = t
    try:
        dt = _EPOCH + timedelta(seconds=sec)
    except OverflowError:
        raise OutputError(f"tar stream: time {sec} is out of range for zstd:chunked") from None
    if not 0 <= dt.year <= 9999:
        raise OutputError(f"tar stream: time {sec} is out of range for zstd:chunked")
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if nsec:
        text += "." + f"{nsec:09d}".rstrip("0")
    return text + "Z"


def _js(s: str) -> str:
    """A JSON string; nearly every path needs no escape and skips json.dumps."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    return json.dumps(s, ensure_ascii=False)


def toc_entry(m: Member, extra: dict[str, Any]) -> str:
    """One TOC entry as compact JSON, fields in the reference writer's order and omitted
    when zero. ``UID``/``GID``/``ModTime`` repeat ``uid``/``gid``/``modtime`` for
    containers/storage 1.43 (podman 4.3), which reads only those spellings; newer readers
    match keys case-insensitively and read the same value twice."""
    parts = [f'"type":"{m.type}"', f'"name":{_js(m.name)}']
    if m.linkname:
        parts.append(f'"linkName":{_js(m.linkname)}')
    if m.mode:
        parts.append(f'"mode":{m.mode}')
    if m.size:
        parts.append(f'"size":{m.size}')
    if m.uid:
        parts.append(f'"uid":{m.uid}')
    if m.gid:
        parts.append(f'"gid":{m.gid}')
    mtime = rfc3339(m.mtime)
    parts.append(f'"modtime":"{mtime}"')
    if m.atime is not None:
        parts.append(f'"accesstime":"{rfc3339(m.atime)}"')
    if m.ctime is not None:
        parts.append(f'"changetime":"{rfc3339(m.ctime)}"')
    if m.devmajor:
        parts.append(f'"devMajor":{m.devmajor}')
    if m.devminor:
        parts.append(f'"devMinor":{m.devminor}')
    if m.xattrs:
        xs = ",".join(
            f"{_js(k)}:\"{base64.b64encode(v).decode('ascii')}\""
            for k, v in sorted(m.xattrs.items())
        )
        parts.append(f'"xattrs":{{{xs}}}')
    for key, value in extra.items():
        parts.append(f'"{key}":{_js(value) if isinstance(value, str) else value}')
    if m.uid:
        parts.append(f'"UID":{m.uid}')
    if m.gid:
        parts.append(f'"GID":{m.gid}')
    parts.append(f'"ModTime":"{mtime}"')
    return "{" + ",".join(parts) + "}"


def _chunk_entry(name: str, extra: dict[str, Any]) -> str:
    parts = ['"type":"chunk"', f'"name":{_js(name)}']
    parts += [f'"{k}":{_js(v) if isinstance(v, str) else v}' for k, v in extra.items()]
    return "{" + ",".join(parts) + "}"


def _split_entry(kind: int, *, name: str | None = None, size: int = 0,
                 payload: bytes | None, position: int) -> bytes:
    """One tar-split JSON line (storage.Entry: type, name, size, payload, position)."""
    parts = [f'"type":{kind}']
    if name:
        parts.append(f'"name":{_js(name)}')
    if size:
        parts.append(f'"size":{size}')
    pl = "null" if payload is None else '"' + base64.b64encode(payload).decode("ascii") + '"'
    parts.append(f'"payload":{pl}')
    parts.append(f'"position":{position}')
    return ("{" + ",".join(parts) + "}\n").encode("utf-8")


# --- the compressor ------------------------------------------------------------------------


class _Sink:
    def __init__(self, out: Any) -> None:
        self.out = out
        self.pos = 0

    def write(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.pos += len(data)


class _Frame:
    """One zstd frame whose content arrives in pieces; small ones are compressed in one call."""

    def __init__(self, cctx: zstandard.ZstdCompressor, sink: _Sink) -> None:
        self._cctx = cctx
        self._sink = sink
        self._parts: list[bytes] = []
        self._size = 0
        self._stream: Any = None
        self.start = sink.pos
        self.length = 0  # uncompressed bytes

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.length += len(data)
        self._parts.append(data)
        self._size += len(data)
        if self._size >= FRAME_PIECE:
            buf = b"".join(self._parts)
            if self._stream is None:
                self._stream = self._cctx.compressobj()
            n = len(buf) - len(buf) % FRAME_PIECE
            for i in range(0, n, FRAME_PIECE):
                self._sink.write(self._stream.compress(buf[i : i + FRAME_PIECE]))
            rest = buf[n:]
            self._parts = [rest] if rest else []
            self._size = len(rest)

    def close(self) -> None:
        buf = b"".join(self._parts)
        if self._stream is None:
            self._sink.write(self._cctx.compress(buf))
        else:
            if buf:
                self._sink.write(self._stream.compress(buf))
            self._sink.write(self._stream.flush())
        self._parts = []


@dataclass
class _Chunk:
    file_offset: int
    size: int
    digest: str
    zeros: bool
    start: int
    end: int


class ZstdChunked:
    """The zstd:chunked compressor: ``write`` the layer tar, ``close``, then read
    :attr:`annotations` for the layer descriptor."""

    def __init__(self, out: Any, level: int) -> None:
        def cctx() -> zstandard.ZstdCompressor:
            return zstandard.ZstdCompressor(
                level=level, write_checksum=False, write_content_size=False, threads=0
            )

        # one compression context per stream: the TOC, the tar-split and the frames
        # are compressed interleaved, and a context holds one stream at a time
        self._cctx = cctx()
        self._sink = _Sink(out)
        self._buf = bytearray()  # unparsed input
        self._state = "header"
        self._meta: _Frame | None = None  # header bytes frame being filled
        self._segment = bytearray()  # raw bytes for the next tar-split segment
        self._pax: dict[str, bytes] = {}
        self._longname: bytes | None = None
        self._longlink: bytes | None = None
        self._ext_kind = b""
        self._ext_left = 0
        self._ext_data = bytearray()
        self._member: Member | None = None
        self._left = 0  # payload bytes still to come
        self._pad = 0  # padding bytes still to come
        self._names: set[str] = set()
        self._trailer_pad = 0
        # tar-split: compressed on the fly, held compressed (a fraction of the headers)
        self._ts_buf = io.BytesIO()
        self._ts_raw = 0
        self._ts = cctx().compressobj()
        self._ts_pos = 0
        # TOC: entries as compact JSON, compressed on the fly
        self._toc_buf = io.BytesIO()
        self._toc_raw = 0
        self._toc = cctx().compressobj()
        self._toc_first = True
        self._put_toc('{"version":1,"entries":[')
        # the current file
        self._chunker: Chunker | None = None
        self._file_hash: Any = None
        self._chunk_hash: Any = None
        self._crc = 0
        self._frame: _Frame | None = None
        self._chunk_start = 0
        self._chunk_zeros = False
        self._chunks: list[_Chunk] = []
        self._written = 0  # payload bytes of the current file handed to chunks
        self.annotations: dict[str, str] = {}
        self.toc_digest = ""
        self.closed = False

    # -- output helpers --

    def _put_toc(self, text: str) -> None:
        raw = text.encode("utf-8")
        self._toc_raw += len(raw)
        self._toc_buf.write(self._toc.compress(raw))

    def _toc_add(self, entry: str) -> None:
        self._put_toc(entry if self._toc_first else "," + entry)
        self._toc_first = False

    def _split_add(self, line: bytes) -> None:
        self._ts_raw += len(line)
        self._ts_buf.write(self._ts.compress(line))
        self._ts_pos += 1

    def _flush_segment(self) -> None:
        if self._segment:
            self._split_add(_split_entry(2, payload=bytes(self._segment), position=self._ts_pos))
            self._segment.clear()

    def _meta_write(self, data: bytes) -> None:
        if self._meta is None:
            self._meta = _Frame(self._cctx, self._sink)
        self._meta.write(data)
        if self._meta.length >= META_FRAME:
            self._meta_close()

    def _meta_close(self) -> None:
        if self._meta is not None:
            self._meta.close()
            self._meta = None

    # -- the stream --

    def write(self, data: bytes, /) -> int:
        n = len(data)
        mv = memoryview(data)
        pos = 0
        while pos < n:
            if self._state == "payload":
                take = min(self._left, n - pos)
                self._payload(bytes(mv[pos : pos + take]))
                pos += take
                self._left -= take
                if not self._left:
                    self._end_file()
                continue
            if self._state == "trailer":
                chunk = bytes(mv[pos:])
                if chunk.strip(b"\0"):
                    raise OutputError("tar stream: data after the end-of-archive marker")
                self._trailer(chunk)
                pos = n
                continue
            if self._state == "pad":
                take = min(self._pad, n - pos)
                piece = bytes(mv[pos : pos + take])
                self._segment += piece
                self._meta_write(piece)
                pos += take
                self._pad -= take
                if not self._pad:
                    self._state = "header"
                continue
            # header: whole blocks
            take = min(_BLOCK - len(self._buf), n - pos)
            self._buf += mv[pos : pos + take]
            pos += take
            if len(self._buf) == _BLOCK:
                block = bytes(self._buf)
                self._buf.clear()
                self._block(block)
        return n

    def _block(self, block: bytes) -> None:
        self._segment += block
        self._meta_write(block)
        if self._ext_left:
            self._ext_data += block[: self._ext_left]
            self._ext_left -= min(self._ext_left, _BLOCK)
            if not self._ext_left:
                data = bytes(self._ext_data)
                self._ext_data.clear()
                if self._ext_kind == b"x":
                    self._pax.update(_pax_records(data))
                elif self._ext_kind == b"L":
                    self._longname = data
                else:
                    self._longlink = data
            return
        if block == _ZERO_BLOCK:
            self._state = "trailer"
            self._trailer_pad = len(self._segment) - _BLOCK  # the last file's padding
            return
        if not _checksum_ok(block):
            raise OutputError("tar stream: bad header checksum")
        flag = block[156:157]
        if flag in (b"x", b"L", b"K"):
            size = _numeric(block[124:136])
            self._ext_kind = flag
            self._ext_left = size
            if size == 0:
                if flag == b"L":
                    self._longname = b""
                elif flag == b"K":
                    self._longlink = b""
            return
        if flag == b"g":
            raise OutputError("tar stream: zstd:chunked cannot store a PAX global header")
        member = parse_member(block, self._pax, self._longname, self._longlink)
        self._pax, self._longname, self._longlink = {}, None, None
        clean = _clean(member.name)
        if clean in self._names:
            raise OutputError(f"{member.name}: zstd:chunked cannot store a path twice")
        self._names.add(clean)
        self._flush_segment()
        self._member = member
        self._left = member.payload
        self._crc = 0
        self._chunks = []
        if member.payload:
            self._meta_close()
            self._state = "payload"
            self._chunker = Chunker(rolling=member.payload >= ROLLSUM_MIN_FILE)
            self._file_hash = hashlib.sha256()
            self._chunk_hash = None
            self._frame = None
            self._written = 0
        else:
            self._end_file()

    def _payload(self, data: bytes) -> None:
        assert self._chunker is not None
        self._crc = crc64(data, self._crc)
        for piece, zeros, cut in self._chunker.feed(data, final=len(data) == self._left):
            self._chunk_put(piece, zeros)
            if cut:
                self._chunk_cut()

    def _chunk_put(self, piece: bytes | int, zeros: bool) -> None:
        n = piece if isinstance(piece, int) else len(piece)
        if not n:
            return
        if self._frame is None:
            self._frame = _Frame(self._cctx, self._sink)
            self._chunk_start = self._written
            self._chunk_zeros = zeros
            # chunk 0's digest is the file digest so far: no second hash for it
            self._chunk_hash = hashlib.sha256() if self._chunks else None
        if isinstance(piece, int):
            z = bytes(min(piece, FRAME_PIECE))
            left = piece
            while left:
                part = z if left >= len(z) else z[:left]
                self._frame.write(part)
                self._file_hash.update(part)
                if self._chunk_hash is not None:
                    self._chunk_hash.update(part)
                left -= len(part)
        else:
            self._frame.write(piece)
            self._file_hash.update(piece)
            if self._chunk_hash is not None:
                self._chunk_hash.update(piece)
        self._written += n

    def _chunk_cut(self) -> None:
        frame = self._frame
        if frame is None:
            return
        frame.close()
        h = self._chunk_hash if self._chunk_hash is not None else self._file_hash
        self._chunks.append(
            _Chunk(
                file_offset=self._chunk_start,
                size=self._written - self._chunk_start,
                digest="sha256:" + h.hexdigest(),
                zeros=self._chunk_zeros,
                start=frame.start,
                end=self._sink.pos,
            )
        )
        self._frame = None

    def _end_file(self) -> None:
        m = self._member
        assert m is not None
        extra: dict[str, Any] = {}
        chunks = self._chunks
        self._pad = 0
        if m.payload:
            assert self._frame is None and chunks, "chunker left a chunk open"
            extra["digest"] = "sha256:" + self._file_hash.hexdigest()
            extra["offset"] = chunks[0].start
            extra["endOffset"] = chunks[-1].end
            if len(chunks) > 1:
                c = chunks[0]
                extra["chunkSize"] = c.size
                extra["chunkDigest"] = c.digest
                if c.zeros:
                    extra["chunkType"] = "zeros"
            self._pad = -m.payload % _BLOCK
        self._toc_add(toc_entry(m, extra))
        if len(chunks) > 1:
            for c in chunks[1:]:
                ce: dict[str, Any] = {
                    "offset": c.start,
                    "endOffset": c.end,
                    "chunkSize": c.size,
                    "chunkOffset": c.file_offset,
                    "chunkDigest": c.digest,
                }
                if c.zeros:
                    ce["chunkType"] = "zeros"
                self._toc_add(_chunk_entry(m.name, ce))
        crc = struct.pack(">Q", self._crc) if m.size > 0 else None
        self._split_add(
            _split_entry(1, name=m.name, size=m.size, payload=crc, position=self._ts_pos)
        )
        self._member = None
        self._chunker = None
        self._state = "pad" if self._pad else "header"

    def _trailer(self, data: bytes) -> None:
        """Trailing zeros go to tar-split in segments of whole blocks (past the last file's
        padding): the reader parses each segment as a tar header, as IterateHeaders does."""
        self._meta_write(data)
        self._segment += data
        if len(self._segment) >= _SEGMENT:
            cut = len(self._segment) - (len(self._segment) - self._trailer_pad) % _BLOCK
            rest = bytes(self._segment[cut:])
            del self._segment[cut:]
            self._flush_segment()
            self._segment += rest
            self._trailer_pad = 0

    def close(self) -> None:
        if self.closed:
            return
        if self._state not in ("trailer", "header") or self._buf or self._ext_left:
            raise OutputError("tar stream ends in the middle of an entry")
        self._meta_close()
        self._flush_segment()
        self._put_toc("]")
        ts = self._ts_buf.getvalue() + self._ts.flush()
        ts_digest = "sha256:" + hashlib.sha256(ts).hexdigest()
        self._put_toc(f',"tarSplitDigest":"{ts_digest}"}}')
        toc = self._toc_buf.getvalue() + self._toc.flush()
        toc_offset = self._sink.pos + 8
        self._sink.write(SKIPPABLE_MAGIC + struct.pack("<I", len(toc)) + toc)
        ts_offset = self._sink.pos + 8
        self._sink.write(SKIPPABLE_MAGIC + struct.pack("<I", len(ts)) + ts)
        footer = struct.pack(
            "<7Q", toc_offset, len(toc), self._toc_raw, MANIFEST_TYPE_CRFS,
            ts_offset, len(ts), self._ts_raw,
        ) + FOOTER_MAGIC
        self._sink.write(SKIPPABLE_MAGIC + struct.pack("<I", len(footer)) + footer)
        self.toc_digest = "sha256:" + hashlib.sha256(toc).hexdigest()
        position = f"{toc_offset}:{len(toc)}:{self._toc_raw}:{MANIFEST_TYPE_CRFS}"
        self.annotations = {
            CHECKSUM_KEY: self.toc_digest,
            POSITION_KEY: position,
            TARSPLIT_KEY: f"{ts_offset}:{len(ts)}:{self._ts_raw}",
            OLD_CHECKSUM_KEY: self.toc_digest,
            OLD_POSITION_KEY: position,
        }
        self.closed = True


def _clean(name: str) -> str:
    """Go's filepath.Clean, which tar-split and the TOC reader key paths by."""
    out = posixpath.normpath(name)
    return "/" + out.lstrip("/") if out.startswith("//") else out


def _checksum_ok(block: bytes) -> bool:
    want = _numeric(block[148:156])
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if want == unsigned:
        return True
    signed = sum((b - 256 if b > 127 else b) for b in block[:148]) + 8 * 32
    signed += sum((b - 256 if b > 127 else b) for b in block[156:])
    return want == signed


# --- reading -------------------------------------------------------------------------------

#: The reference reader's limit on a TOC (compressed and uncompressed).
MAX_TOC = 150 << 20


@dataclass(frozen=True, slots=True)
class Position:
    offset: int
    length: int
    raw_length: int


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a zstd:chunked blob keeps its metadata, from its descriptor annotations."""

    toc: Position
    toc_digest: str
    tarsplit: Position | None


def layout(annotations: Mapping[str, str] | Iterable[tuple[str, str]]) -> Layout | None:
    """The blob's TOC and tar-split positions; None when the annotations name no
    zstd:chunked TOC (or name it in a form a client would not read either)."""
    ann = dict(annotations)
    digest = ann.get(CHECKSUM_KEY) or ann.get(OLD_CHECKSUM_KEY)
    pos = ann.get(POSITION_KEY) or ann.get(OLD_POSITION_KEY)
    if not digest or not pos:
        return None
    try:
        off, length, raw, kind = (int(x) for x in pos.split(":"))
        ts = ann.get(TARSPLIT_KEY)
        tarsplit = Position(*(int(x) for x in ts.split(":"))) if ts else None
    except (TypeError, ValueError):
        return None
    if kind != MANIFEST_TYPE_CRFS:
        return None
    return Layout(Position(off, length, raw), digest, tarsplit)


def read_toc(f: BinaryIO, where: Layout, label: str) -> dict[str, Any]:
    """The TOC of the blob open as ``f``, checked against the annotation's digest."""
    pos = where.toc
    if not 0 < pos.length <= MAX_TOC or not 0 <= pos.raw_length <= MAX_TOC:
        raise InputError(f"{label}: zstd:chunked TOC size out of range")
    f.seek(pos.offset)
    data = f.read(pos.length)
    if "sha256:" + hashlib.sha256(data).hexdigest() != where.toc_digest:
        raise InputError(f"{label}: zstd:chunked TOC does not match its digest")
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=pos.raw_length)
        toc = json.loads(raw)
    except (zstandard.ZstdError, ValueError, RecursionError) as err:
        raise InputError(f"{label}: unreadable zstd:chunked TOC: {err}") from None
    if not isinstance(toc, dict) or not isinstance(toc.get("entries"), list):
        raise InputError(f"{label}: zstd:chunked TOC has no entries")
    return toc
