"""tarfile's header parsing made safe for hostile input.

tarfile reads an extension header (pax, GNU long name) whole into memory,
recurses once per header in a row, and on Python < 3.11.10 parses pax records
with regexes that backtrack quadratically (CVE-2024-6232). :class:`GuardedTarInfo`
bounds the first two and parses pax records itself, strictly and in one pass;
sparse files (which tarfile only half-supports for pax) are refused.
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
        if any(k.startswith("GNU.sparse.") for k in headers):
            raise HugeHeader(f"member {member.name!r} is a sparse file (not supported)")
        if not glob:
            member._apply_pax_info(headers, enc, errors)  # type: ignore[attr-defined]
            member.offset = self.offset
            if "size" in headers:
                offset = member.offset_data
                if member.isreg() or member.type not in tarfile.SUPPORTED_TYPES:
                    offset += _blocks(member.size)
                tf.offset = offset
        return member


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
