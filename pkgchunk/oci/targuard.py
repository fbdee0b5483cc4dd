"""tarfile's header parsing made safe for hostile input.

tarfile reads an extension header (pax, GNU long name) whole into memory,
recurses once per header in a row, and on Python < 3.11.10 parses pax records
with regexes that backtrack quadratically (CVE-2024-6232). :class:`GuardedTarInfo`
bounds the first two and parses pax records itself, strictly and in one pass,
including GNU's PAX sparse formats 0.0, 0.1 and 1.0 (as GNU tar ``--sparse`` writes them).
"""

from __future__ import annotations

import tarfile
from typing import Any, cast

#: Largest pax / GNU long-name header accepted (tarfile would read any size into memory).
MAX_EXT_HEADER = 16 << 20
#: Extension headers in a row before a member (tarfile recurses once per header).
MAX_EXT_CHAIN = 8
_EXT_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class HugeHeader(Exception):
    """An extended tar header we refuse: too large, malformed, chained too deep or
    describing a sparse file (the message says where)."""


class GuardedTarInfo(tarfile.TarInfo):
    """tarfile's header parsing made safe for hostile input.

    Refuses extension headers so large that tarfile would read them whole into
    memory, and chains of them deep enough to exhaust the stack (tarfile recurses
    once per header); parses pax records itself, in linear time.
    """

    def _proc_member(self, tf: tarfile.TarFile) -> Any:
        if self.type not in _EXT_TYPES:
            return super()._proc_member(tf)  # type: ignore[misc]
        if self.size > MAX_EXT_HEADER:
            raise HugeHeader(f"{self.size}-byte extended header at offset {self.offset}")
        depth = getattr(tf, "_pkgchunk_ext_depth", 0)
        if depth >= MAX_EXT_CHAIN:
            raise HugeHeader(f"more than {MAX_EXT_CHAIN} extended headers in a row at offset "
                             f"{self.offset}")
        tf._pkgchunk_ext_depth = depth + 1  # type: ignore[attr-defined]
        try:
            return super()._proc_member(tf)  # type: ignore[misc]
        finally:
            tf._pkgchunk_ext_depth = depth  # type: ignore[attr-defined]

    def _proc_sparse(self, tf: tarfile.TarFile) -> Any:
        """Old GNU sparse (type 'S'): tarfile reads the map; keep the bytes stored so the
        reader can check the map against them."""
        stored = self.size
        member = super()._proc_sparse(tf)  # type: ignore[misc]
        member.sparse_stored = stored
        return member

    def _proc_pax(self, tf: tarfile.TarFile) -> Any:
        """Apply a pax header to the member after it, like tarfile does, but parse it strictly
        in one pass: the regexes of Python < 3.11.10 backtrack quadratically on crafted
        records (CVE-2024-6232), and sparse files are refused rather than half-supported."""
        fileobj: Any = tf.fileobj
        buf = fileobj.read(_blocks(self.size))
        records = _pax_records(buf, self.size, self.offset)
        del buf
        glob = self.type == tarfile.XGLTYPE
        shared = cast(dict[str, str], tf.pax_headers)
        headers = shared if glob else dict(shared)
        charset = next((v for k, v in records if k == b"hdrcharset"), None)
        binary = charset == b"BINARY" if charset is not None else (
            headers.get("hdrcharset") == "BINARY"
        )
        enc, errors = tf.encoding, tf.errors
        if glob and any(k.startswith(b"GNU.sparse.") for k, _ in records):
            raise HugeHeader(f"sparse record in a global pax header at offset {self.offset}")
        for key, value in records:
            name = _decode(key, "utf-8", "utf-8", errors)
            if name in tarfile.PAX_NAME_FIELDS:
                text = value.decode(enc, errors) if binary else _decode(value, "utf-8", enc, errors)
            else:
                text = _decode(value, "utf-8", "utf-8", errors)
            headers[name] = text
        try:
            member = self.fromtarfile(tf)
        except tarfile.HeaderError as err:
            raise tarfile.ReadError(str(err)) from None
        if not glob and any(k.startswith("GNU.sparse.") for k in headers):
            member.sparse = _sparse_map(tf, member, headers, records)  # type: ignore[assignment]
            member.sparse_stored = member.size  # type: ignore[attr-defined]
        if not glob:
            member._apply_pax_info(headers, enc, errors)  # type: ignore[attr-defined]
            member.offset = self.offset
            if "size" in headers:
                offset = member.offset_data
                if member.isreg() or member.type not in tarfile.SUPPORTED_TYPES:
                    offset += _blocks(member.size)
                tf.offset = offset
        return member


#: Segments a sparse map may list (GNU tar writes one per data extent).
MAX_SPARSE_SEGMENTS = 1 << 20


def _sparse_map(
    tf: tarfile.TarFile, member: tarfile.TarInfo, headers: dict[str, str],
    records: list[tuple[bytes, bytes]],
) -> list[tuple[int, int]]:
    """The (offset, length) data segments of a GNU PAX sparse member, as GNU tar and Go's
    archive/tar read them: 0.0 repeats offset/numbytes records, 0.1 has one map record,
    1.0 puts the map in front of the data (decimal lines padded to a block)."""
    name = headers.get("GNU.sparse.name") or headers.get("path") or member.name

    def bad(problem: str) -> HugeHeader:
        return HugeHeader(f"member {name!r}: {problem}")

    numbers: list[str]
    if headers.get("GNU.sparse.major") == "1" and headers.get("GNU.sparse.minor") == "0":
        numbers = _sparse_10(tf, member, bad)
    elif headers.get("GNU.sparse.major", "0") != "0":
        raise bad(
            f"sparse format {headers.get('GNU.sparse.major')}.{headers.get('GNU.sparse.minor')}"
            " is not supported"
        )
    elif "GNU.sparse.map" in headers:
        numbers = headers["GNU.sparse.map"].split(",") if headers["GNU.sparse.map"] else []
    else:
        numbers = [
            v.decode("ascii", "replace") for k, v in records
            if k in (b"GNU.sparse.offset", b"GNU.sparse.numbytes")
        ]
    if len(numbers) % 2 or len(numbers) > 2 * MAX_SPARSE_SEGMENTS:
        raise bad("malformed sparse map")
    blocks = headers.get("GNU.sparse.numblocks")
    if blocks is not None and blocks != str(len(numbers) // 2):
        raise bad(f"sparse map of {len(numbers) // 2} segments, numblocks says {blocks}")
    if not all(n.isdigit() and len(n) <= 20 for n in numbers):
        raise bad("malformed sparse map")
    values = [int(n) for n in numbers]
    real = headers.get("GNU.sparse.realsize") or headers.get("GNU.sparse.size")
    if real is None or not real.isdigit():
        raise bad("sparse file without its size")
    return list(zip(values[::2], values[1::2], strict=True))


def _sparse_10(tf: tarfile.TarFile, member: tarfile.TarInfo, bad: Any) -> list[str]:
    """Read the 1.0 map in front of the data; the member's data starts after it."""
    fileobj: Any = tf.fileobj
    fileobj.seek(member.offset_data)
    limit = min(member.size, MAX_EXT_HEADER)
    buf = b""
    lines: list[bytes] = []
    want: int | None = None
    while want is None or len(lines) < want:
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > 21 or fileobj.tell() - member.offset_data >= limit:
                raise bad("malformed sparse map")
            block = fileobj.read(tarfile.BLOCKSIZE)
            if len(block) < tarfile.BLOCKSIZE:
                raise bad("sparse map runs past the end of the archive")
            buf += block
            continue
        line, buf = buf[:nl], buf[nl + 1 :]
        if not line.isdigit():
            raise bad("malformed sparse map")
        if want is None:
            want = 1 + 2 * int(line)
            if want > 1 + 2 * MAX_SPARSE_SEGMENTS:
                raise bad("malformed sparse map")
        lines.append(line)
    used = fileobj.tell() - member.offset_data
    if used > member.size:
        raise bad("sparse map runs past the member's data")
    member.offset_data += used
    member.size -= used
    return [x.decode("ascii") for x in lines[1:]]


def _pax_records(buf: bytes, size: int, where: int) -> list[tuple[bytes, bytes]]:
    """The (keyword, value) records of a pax header, each checked against its length and
    newline; NUL padding may follow the last one."""
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    end = min(size, len(buf))
    while pos < end and buf[pos] != 0:
        space = buf.find(b" ", pos, min(end, pos + 21))
        digits = buf[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise HugeHeader(f"malformed pax record at offset {where + 512 + pos}")
        length = int(digits)
        stop = pos + length
        equals = buf.find(b"=", space + 1, stop)
        if length < 5 or stop > end or equals <= space + 1 or buf[stop - 1] != 0x0A:
            raise HugeHeader(f"malformed pax record at offset {where + 512 + pos}")
        out.append((buf[space + 1 : equals], buf[equals + 1 : stop - 1]))
        pos = stop
    return out


def _blocks(n: int) -> int:
    return -(-n // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _decode(raw: bytes, encoding: str, fallback: str, errors: str) -> str:
    try:
        return raw.decode(encoding, "strict")
    except UnicodeDecodeError:
        return raw.decode(fallback, errors)
