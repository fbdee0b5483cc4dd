"""The ports of chunkah's and ostree-ext's packing behave as their real code does.

The properties are the ones the real code documents and tests for itself (coreos/chunkah
src/packing.rs at 4c8abc3, ostreedev/ostree-rs-ext lib/src/chunking.rs at b885f94): every
component placed once, at most the budget, chunkah's groups most stable first, bins allocated to
stability tiers by component count, empty hash bins refilled, ostree-ext's single low-size bin,
medium partitions in ascending change frequency and the empty bin kept for new packages.
"""

from __future__ import annotations

import importlib
import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

#: bench/ is scripts, not a typed package: imported by name (mypy sees a plain module)
st = importlib.import_module("strategies")


def _items(n: int, seed: int) -> list[tuple[str, int, float]]:
    rnd = random.Random(seed)
    return [
        (f"rpm/pkg{i:03d}", int(rnd.lognormvariate(13, 2)), rnd.choice([0.99, rnd.random()]))
        for i in range(n)
    ]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("budget", [3, 8, 40, 64])
def test_chunkah_packing_invariants(seed: int, budget: int) -> None:
    items = _items(200, seed)
    groups = st.chunkah_packing(items, budget)
    flat = sorted(i for g in groups for i in g)
    assert flat == list(range(len(items)))
    assert 1 <= len(groups) <= budget
    assert all(groups)
    stab = [math.prod(items[i][2] for i in g) for g in groups]
    assert stab == sorted(stab, reverse=True)


def test_chunkah_outliers_and_volatile_alone() -> None:
    huge = [("huge", 100000, 0.9)] + [(f"small{i}", 10, 0.9) for i in range(4)]
    groups = st.chunkah_packing(huge, 3)
    assert [0] in groups
    three = [("stable1", 1000, 0.99), ("stable2", 1000, 0.99), ("volatile", 1000, 0.1)]
    groups = st.chunkah_packing(three, 2)
    assert [2] in groups and [0, 1] in groups


def test_chunkah_tier_bins_follow_component_count_not_bytes() -> None:
    # the real allocation: round(count / total * bins), at least one per tier, rest to the last
    assert st._chunkah_tier_bins([10, 80, 10], 10) == [1, 8, 1]
    assert st._chunkah_tier_bins([0, 5, 5], 4) == [0, 2, 2]
    assert st._chunkah_tier_bins([1, 1, 98], 3) == [1, 1, 1]
    # one tiny tier with huge bytes would get most bins by bytes; by count it gets one
    items = [(f"deb/s{i}", 10, 0.99) for i in range(30)] + [("deb/big", 10**9, 0.01)]
    assert st._chunkah_tier_bins([30, 0, 1], 6) == [5, 0, 1]
    assert sorted(len(g) for g in st.chunkah_packing(items, 6))[-1] < 30


def test_chunkah_hash_bins_refill_empty_bins() -> None:
    items = [(f"deb/p{i}", (i + 1) * 100, 0.5) for i in range(12)]
    idx = list(range(12))
    n = 10
    raw = {st.chunkah_hash(items[i][0]) % n for i in idx}
    groups = st._chunkah_hash_bins(items, idx, n)
    assert len(raw) < n, "the case must have hash collisions to test the refill"
    assert len(groups) == n  # every empty bin took the largest item of a crowded bin
    assert sorted(i for g, _ in groups for i in g) == idx


def test_chunkah_stability_denominator_is_days_since_oldest_entry() -> None:
    day = st.DAY
    now = 1_000 * day
    # two change days, the oldest 10 days ago: lambda = 2/10 per day
    assert st.chunkah_stability([now - 2 * day, now - 10 * day], now) == pytest.approx(
        math.exp(-0.2 * 7)
    )
    # entries on the same day count once; nothing in the last year: 0.99
    assert st.chunkah_stability([now - 10 * day + 5, now - 10 * day], now) == pytest.approx(
        math.exp(-0.1 * 7)
    )
    assert st.chunkah_stability([now - 400 * day], now) == 0.99
    assert st.chunkah_stability([now - 100], now) == 0.0


def test_chunkah_hash_is_rusts_str_hash_into_fnv() -> None:
    # FNV-1a 64 of b"a" + b"\xff" (str::hash writes a 0xff terminator)
    h = 0xCBF29CE484222325
    for b in b"a\xff":
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    assert st.chunkah_hash("a") == h != st.fnv1a64(b"a")


def _comps(n: int, seed: int) -> list[tuple[str, int, int]]:
    rnd = random.Random(seed)
    comps = [(f"pkg{i:03d}", int(rnd.lognormvariate(12, 2.5)), rnd.randrange(0, 30))
             for i in range(n)]
    return sorted(comps, key=lambda c: -c[1])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("budget", [8, 40, 64])
def test_ostree_basic_packing_invariants(seed: int, budget: int) -> None:
    comps = _comps(300, seed)
    bins = st.ostree_basic_packing(comps, budget)
    assert len(bins) <= budget
    assert bins[-1] == []  # reserved for new packages
    assert sorted(c for b in bins for c in b) == sorted(c[0] for c in comps)
    limit_hs = math.floor(0.6 * (budget - 2))
    low = set(c[0] for c in st._ostree_partitions(comps, limit_hs).get("2ls", []))
    assert len(low) > 5
    # the low-size partition is one bin however many it holds (merging may add to it)
    assert any(low <= set(b) for b in bins)


def test_ostree_partitions_ascending_frequency_and_one_low_bin() -> None:
    comps = _comps(300, 7)
    parts = st._ostree_partitions(comps, 20)
    assert len(parts["1hs"]) <= 20
    assert [c[1] for c in parts["1hs"]] == sorted((c[1] for c in parts["1hs"]), reverse=True)
    for key, cs in parts.items():
        if key not in ("1hs", "2ls"):
            assert [c[2] for c in cs] == sorted(c[2] for c in cs), key


def test_ostree_fewer_components_than_bins() -> None:
    comps = _comps(5, 1)
    assert st.ostree_basic_packing(comps, 8) == [[c[0]] for c in comps] + [[]]
