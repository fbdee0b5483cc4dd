"""The first build's layout: stable against the next image when no previous plan exists.

Without a previous plan the cost-greedy merge (planner.py) is chaotic: an update shifts a few
groups' sizes and change probabilities a little, that reorders the cheapest merges, and the
cascade changes who shares a layer almost everywhere (on a real Debian point update 31 of 40
layers changed, most only in their members). A stateless pipeline, or a ``--fresh`` build,
then pulls layers whose content never changed. So a first build places each group by its
*own* properties only, in coarse classes whose boundaries are absolute, never relative to the
rest of the image:

* a group holding at least ``SOLO_SHARE`` of an average layer's bytes takes a layer alone
  (the largest first, at most ``SOLO_CAP`` of the layers): sizes move by a few percent in an
  update, so the same groups stay alone;
* the others fall into cells by change probability (``TIER_BOUNDS``) and size
  (``SIZE_BOUNDS``), so volatile and stable, small and large, do not share a layer;
* the remaining layers go to the cells by the expected bytes each extra layer saves;
* inside a cell a group's layer is a consistent hash of its key (jump hash, Lamping and
  Veach), so when a cell gains or loses a layer only about 1/k of its groups move.

An update moves a group only when it crosses a class boundary, and that group has usually
changed anyway. Cost-awareness comes from the classes and the allocation; what is lost against
the greedy merge is matching within a cell, a few percent of expected bytes.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence

#: Weekly change probability classes: below 2 % is at most one changelog day in two years,
#: 10 % and above is buckets, the package databases and the fastest-moving sources.
TIER_BOUNDS = (0.02, 0.1)
#: Small groups (most libraries) apart from large ones.
SIZE_BOUNDS = (1 << 20,)
#: A group alone when it holds this share of an average layer's bytes.
SOLO_SHARE = 0.25
#: At most this share of the layers go to groups alone, so the cells keep room.
SOLO_CAP = 0.6

_MASK = (1 << 64) - 1


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()[:8])


def jump(key: int, buckets: int) -> int:
    """Jump consistent hash: bucket in [0, buckets); growing to k buckets moves 1/k of keys."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def layout(items: Mapping[str, tuple[int, float]], budget: int, min_gain: float) -> list[list[str]]:
    """Group keys -> at most ``budget`` non-empty layers. ``items`` maps a key to
    (bytes, change probability). Deterministic and independent of the mapping's order."""
    if budget < 1 or not items:
        return []
    keys = sorted(items)
    average = sum(items[k][0] for k in keys) / budget
    big = sorted(
        (k for k in keys if items[k][0] >= SOLO_SHARE * average), key=lambda k: (-items[k][0], k)
    )
    solo = big[: math.floor(budget * SOLO_CAP)]
    taken = set(solo)
    rest = [k for k in keys if k not in taken]
    out = [[k] for k in solo]
    room = budget - len(solo)
    if rest:
        out.extend(_cells(rest, items, room, min_gain))
    return out


def _cells(
    keys: Sequence[str], items: Mapping[str, tuple[int, float]], room: int, min_gain: float
) -> list[list[str]]:
    cells: dict[tuple[int, int], list[str]] = {}
    for k in keys:
        size, p = items[k]
        cell = (bisect.bisect(TIER_BOUNDS, p), bisect.bisect(SIZE_BOUNDS, size))
        cells.setdefault(cell, []).append(k)
    if len(cells) > room:  # not enough layers: by probability only, then one hash over all
        merged: dict[tuple[int, int], list[str]] = {}
        for (tier, _), members in sorted(cells.items()):
            merged.setdefault((tier, 0), []).extend(members)
        cells = merged if len(merged) <= room else {(0, 0): list(keys)}

    total = {c: sum(items[k][0] for k in members) for c, members in cells.items()}
    # a certain change (the package databases) would make every share look certain
    q = {c: math.prod(1.0 - min(items[k][1], 0.99) for k in ms) for c, ms in cells.items()}

    def cost(cell: tuple[int, int], n: int) -> float:
        return total[cell] * (1.0 - q[cell] ** (1.0 / n))  # expected bytes, n even shares

    def gain(cell: tuple[int, int], n: int) -> float:
        """Best average saving per extra layer, looking ahead: splitting volatile groups
        saves little until the shares get small, so one step alone would stop too early."""
        here = cost(cell, n)
        return max((here - cost(cell, j)) / (j - n) for j in range(n + 1, len(cells[cell]) + 1))

    count = {cell: 1 for cell in cells}
    for _ in range(room - len(cells)):
        options = [(gain(c, n), c) for c, n in count.items() if n < len(cells[c])]
        if not options:
            break
        best_gain, best = max(options, key=lambda o: (o[0], tuple(-x for x in o[1])))
        if best_gain < min_gain:
            break
        count[best] += 1
    out: list[list[str]] = []
    for cell in sorted(cells):
        bins: list[list[str]] = [[] for _ in range(count[cell])]
        for k in cells[cell]:
            bins[jump(key_hash(k), count[cell])].append(k)
        out.extend(_refill(bins, items))
    return out


def _refill(bins: list[list[str]], items: Mapping[str, tuple[int, float]]) -> list[list[str]]:
    """A bin the hash left empty takes the largest group of a shared bin (as chunkah does),
    so the layers allocated are used; only that group depends on the others."""
    for empty in (b for b in bins if not b):
        shared = [(items[k][0], k, b) for b in bins if len(b) > 1 for k in b]
        if not shared:
            break
        _, key, source = max(shared)
        source.remove(key)
        empty.append(key)
    return [b for b in bins if b]
