"""Dates of a Debian package's changelog entries: how often the package changes.

The planner wants packages that change together in the same layer, and the changelog
trailer lines (`` -- Name <mail>  Day, DD Mon YYYY HH:MM:SS +ZZZZ``) are the only
history an installed Debian image carries. The changelog is read from the image itself
(through the image's own symlinks: ``/usr/share/doc/PKG`` is often a link to another
package's doc directory), and only its first :data:`MAX_BYTES` decompressed bytes.
Only trailer lines are used, so entries after a malformed heading still count
(``dpkg-parsechangelog`` stops there; those are decades-old entries in practice).
"""

from __future__ import annotations

import calendar
import gzip
import re
import warnings
import zlib
from email.utils import parsedate_tz
from typing import BinaryIO

from pkgchunk.errors import PkgchunkError, PkgdbWarning
from pkgchunk.tree import FileTree

#: Decompressed bytes read from one changelog (old entries beyond this are ignored).
MAX_BYTES = 2 << 20

#: Candidates in order: non-native packages ship changelog.Debian.gz; native ones
#: ship their Debian changelog as changelog.gz.
NAMES = ("changelog.Debian.gz", "changelog.Debian", "changelog.gz")

_TRAILER = re.compile(rb"^ -- (?:[^<\n]*)<[^>\n]*>  ([^\n]+?)\s*$")
_CHUNK = 64 << 10


def parse_times(data: bytes) -> tuple[int, ...]:
    """Unix times of every well-formed trailer line, newest first (bad dates are skipped)."""
    times: list[int] = []
    for line in data.splitlines():
        if not line.startswith(b" -- "):
            continue
        m = _TRAILER.match(line)
        if m is None:
            continue
        t = _parse_date(m.group(1).decode("ascii", "replace"))
        if t is not None:
            times.append(t)
    times.sort(reverse=True)
    return tuple(times)


def _parse_date(text: str) -> int | None:
    parsed = parsedate_tz(text)
    if parsed is None:
        return None
    year = parsed[0]
    if not 1970 <= year <= 9999:
        return None
    offset = parsed[9] or 0
    try:
        return calendar.timegm(parsed[:6]) - offset
    except (ValueError, OverflowError):
        return None


def changelog_path(tree: FileTree, package: str) -> str | None:
    """Tree path of the package's Debian changelog, following the image's symlinks."""
    if not package or "/" in package or package in (".", ".."):
        return None
    for name in NAMES:
        path = tree.resolve(f"usr/share/doc/{package}/{name}")
        if path is not None:
            entry = tree.entries.get(path)
            if entry is not None and entry.kind == "reg" and entry.data is not None:
                return path
    return None


def package_times(tree: FileTree, package: str) -> tuple[int, ...]:
    """Changelog entry times of ``package`` in this image, newest first; () when it has none.

    A corrupt or truncated changelog gives the entries read before the damage and a
    :class:`PkgdbWarning` (it never fails the database read).
    """
    path = changelog_path(tree, package)
    if path is None:
        return ()
    try:
        with tree.open(path) as raw:
            data, problem = _read_bounded(raw, path.endswith(".gz"))
    except (OSError, PkgchunkError) as err:
        data, problem = b"", str(err)
    if problem:
        warnings.warn(f"{path}: unreadable changelog ({problem})", PkgdbWarning, stacklevel=2)
    return parse_times(data)


def _read_bounded(raw: BinaryIO, compressed: bool) -> tuple[bytes, str]:
    """Up to MAX_BYTES of (decompressed) content, plus a problem description or ''."""
    stream: BinaryIO | gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
    parts: list[bytes] = []
    total = 0
    problem = ""
    try:
        while total < MAX_BYTES:
            chunk = stream.read(min(_CHUNK, MAX_BYTES - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
    except (OSError, EOFError, zlib.error) as err:
        problem = str(err) or type(err).__name__
    data = b"".join(parts)
    if total >= MAX_BYTES or problem:
        # The last line may be cut in the middle.
        data = data[: data.rfind(b"\n") + 1]
    return data, problem
