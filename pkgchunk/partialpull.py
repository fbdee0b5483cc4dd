"""What a partial-pull client fetches for NEW when it holds OLD: the zstd:chunked update cost.

Modelled on containers/storage's chunked differ (``pkg/chunked/storage_linux.go``, commit
83cf57466529353aced8f1803f2302698e0b5cb7): for each layer blob of NEW it does not hold, a
client with ``enable_partial_images`` fetches the TOC and the tar-split, then, for every
regular file, nothing if a local layer holds a file of that digest, else each chunk it
finds nowhere locally (a ``zeros`` chunk is never fetched). Local means layers that were
themselves pulled chunked: OLD's zstd:chunked layers. The wanted ranges are merged the way
the client merges them before asking: gaps of at most 1 KiB, and more of the smallest
gaps while there are over 1024 ranges. A layer without a TOC is fetched whole.

Pure: the TOCs come in as parsed JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: containers/storage: gaps up to this are fetched rather than split into two ranges...
AUTO_MERGE_GAP = 1024
#: ... and a layer is fetched in at most this many ranges.
MAX_RANGES = 1024


@dataclass(frozen=True, slots=True)
class LayerFetch:
    """One pulled layer of NEW as a partial-pull client fetches it."""

    digest: str
    chunked: bool
    toc_bytes: int = 0
    tarsplit_bytes: int = 0
    chunk_bytes: int = 0  # the missing chunks themselves
    gap_bytes: int = 0  # what range merging adds between them
    ranges: int = 0
    files: int = 0  # regular files fetched (wholly or partly)
    whole_bytes: int = 0  # a layer without a TOC: its blob

    @property
    def total(self) -> int:
        return (self.toc_bytes + self.tarsplit_bytes + self.chunk_bytes + self.gap_bytes
                + self.whole_bytes)


def known_digests(tocs: Iterable[Mapping[str, Any]]) -> set[str]:
    """Every file and chunk digest the held layers' TOCs list."""
    out: set[str] = set()
    for toc in tocs:
        for e in toc.get("entries") or ():
            if not isinstance(e, dict):
                continue
            for key in ("digest", "chunkDigest"):
                value = e.get(key)
                if isinstance(value, str) and value:
                    out.add(value)
    return out


def missing_ranges(toc: Mapping[str, Any], known: set[str]) -> tuple[list[tuple[int, int]], int]:
    """(offset, end) of every chunk to fetch, in blob order, and how many files they are."""
    entries = [e for e in toc.get("entries") or () if isinstance(e, dict)]
    out: list[tuple[int, int]] = []
    files = 0
    i = 0
    while i < len(entries):
        e = entries[i]
        i += 1
        if e.get("type") != "reg":
            continue
        chunks = [e]
        while i < len(entries) and entries[i].get("type") == "chunk":
            chunks.append(entries[i])
            i += 1
        if not e.get("size") or e.get("digest") in known:
            continue
        wanted = []
        for n, c in enumerate(chunks):
            # a chunk ends where the next begins (the file entry's endOffset is the file's
            # end), the last one at the file's end: as the client's mergeTocEntries reads it
            start = int(c.get("offset") or 0)
            if n + 1 < len(chunks):
                end = int(chunks[n + 1].get("offset") or 0)
            else:
                end = int(e.get("endOffset") or 0)
            if c.get("chunkType") == "zeros":
                continue
            if len(chunks) > 1 and c.get("chunkDigest") in known:
                continue
            if end > start:
                wanted.append((start, end))
        if wanted:
            files += 1
            out.extend(wanted)
    out.sort()
    return out, files


def merge(ranges: Sequence[tuple[int, int]]) -> tuple[list[tuple[int, int]], int]:
    """The ranges a client asks for, and the gap bytes that merging adds."""
    if not ranges:
        return [], 0
    gaps = [(ranges[k + 1][0] - ranges[k][1], k) for k in range(len(ranges) - 1)]
    must = len(ranges) - MAX_RANGES  # merges needed to get down to MAX_RANGES
    merged_after: set[int] = set()
    for rank, (gap, k) in enumerate(sorted(gaps)):
        if gap <= AUTO_MERGE_GAP or rank < must:
            merged_after.add(k)
    out: list[tuple[int, int]] = []
    gap_bytes = 0
    for k, (start, end) in enumerate(ranges):
        if k and (k - 1) in merged_after:
            gap_bytes += max(0, start - out[-1][1])
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out, gap_bytes


def layer_fetch(
    digest: str,
    size: int,
    layout: Any,
    toc: Mapping[str, Any] | None,
    known: set[str],
) -> LayerFetch:
    """What a partial-pull client fetches of one layer it does not hold (``layout``: the
    blob's :class:`~pkgchunk.oci.zstdchunked.Layout`; None or no TOC: a whole pull)."""
    if layout is None or toc is None:
        return LayerFetch(digest, False, whole_bytes=size)
    wanted, files = missing_ranges(toc, known)
    ranges, gap = merge(wanted)
    return LayerFetch(
        digest,
        True,
        toc_bytes=layout.toc.length,
        tarsplit_bytes=layout.tarsplit.length if layout.tarsplit else 0,
        chunk_bytes=sum(end - start for start, end in wanted),
        gap_bytes=gap,
        ranges=len(ranges),
        files=files,
    )
