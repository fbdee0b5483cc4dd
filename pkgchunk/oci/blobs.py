"""Content-addressed blobs: digest syntax, verified reads, small JSON documents."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, BinaryIO

from pkgchunk.errors import InputError
from pkgchunk.safeopen import open_regular

#: Largest manifest / index / config accepted (real ones are a few KiB).
MAX_JSON_BYTES = 16 << 20
CHUNK = 1 << 20

_DIGEST = {
    "sha256": re.compile(r"[0-9a-f]{64}"),
    "sha512": re.compile(r"[0-9a-f]{128}"),
}


def open_blob(path: str) -> BinaryIO:
    """Open a file of the input for reading: a regular file only. Raises OSError."""
    return open_regular(path)


def parse_digest(label: str, digest: object) -> tuple[str, str]:
    """``'sha256:<hex>'`` -> ('sha256', hex); anything else is hostile (it becomes a path)."""
    if isinstance(digest, str):
        alg, _, hexpart = digest.partition(":")
        pattern = _DIGEST.get(alg)
        if pattern is not None and pattern.fullmatch(hexpart):
            return alg, hexpart
    raise InputError(f"{label}: invalid digest {digest!r}")


class HashingReader:
    """Reads a blob, hashing and counting every byte that passes through."""

    def __init__(self, f: BinaryIO, alg: str = "sha256") -> None:
        self._f = f
        self.hash = hashlib.new(alg)
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Hash whatever the consumer left unread (the digest covers the whole blob)."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


def check_digest(label: str, digest: str, reader: HashingReader, size: int | None) -> None:
    """After a full read: the bytes must hash to ``digest`` (and have ``size`` bytes)."""
    _, hexpart = digest.split(":", 1)
    if reader.hexdigest() != hexpart:
        raise InputError(f"{label}: blob {digest} digest mismatch")
    if size is not None and reader.count != size:
        raise InputError(
            f"{label}: blob {digest} has {reader.count} bytes, the descriptor says {size}"
        )


def read_verified(label: str, path: str, digest: str, size: int | None) -> bytes:
    """A small blob's bytes, verified against its digest."""
    alg, _ = parse_digest(label, digest)
    if size is not None and size > MAX_JSON_BYTES:
        raise InputError(f"{label}: blob {digest} is too large ({size} bytes)")
    try:
        with open_blob(path) as f:
            reader = HashingReader(f, alg)
            data = reader.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{label}: blob {digest} is missing") from None
    except OSError as err:
        raise InputError(f"{label}: blob {digest}: {err.strerror or err}") from None
    if len(data) > MAX_JSON_BYTES:
        raise InputError(f"{label}: blob {digest} is too large (over {MAX_JSON_BYTES} bytes)")
    check_digest(label, digest, reader, size)
    return data


def parse_json(label: str, data: bytes, what: str) -> dict[str, Any]:
    """A JSON object, or InputError naming what it should have been."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise InputError(f"{label}: malformed {what}: {err}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{label}: malformed {what}: not a JSON object")
    return doc


def read_json_file(label: str, path: str, what: str) -> dict[str, Any]:
    """An unaddressed JSON document (index.json, manifest.json), bounded in size."""
    try:
        with open_blob(path) as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{label}: {what} is missing") from None
    except OSError as err:
        raise InputError(f"{label}: {what}: {err.strerror or err}") from None
    if len(data) > MAX_JSON_BYTES:
        raise InputError(f"{label}: {what} is too large")
    return parse_json(label, data, what)
