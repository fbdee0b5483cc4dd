"""Layering strategies the benchmark scores, re-implemented from their published descriptions.

THE INTERFACE (how to add a strategy, e.g. pkgchunk's planner):

    def my_strategy(build: model.Build, budget: int, prev: Prev | None) -> Plan: ...
    STRATEGIES["my-name"] = my_strategy

* ``build`` is one image build (``bench/model.py``): ``build.files`` maps every path (relative,
  e.g. ``usr/bin/ls``; dirs, symlinks and files alike) to a ``FileRec`` with ``kind``, ``size``,
  ``csize`` (estimated gzip bytes), ``mtime``, ``digest`` and ``owner`` (the binary package that
  alone owns the path, None for unowned files and directories several packages share);
  ``build.packages`` maps a binary package to ``PkgInfo`` (version, ``source`` package,
  ``installed_kib``, resolved ``depends``, ``replaces``, ``changelog_dates``); ``build.sde`` is
  the build's SOURCE_DATE_EPOCH and ``build.as_built`` the build's own layers.
* ``budget`` is the maximum number of layers (64 by default; the benchmark also runs 40).
* ``prev`` is ``(previous build, the plan this strategy returned for it)`` when scoring an
  update, None for a first build; stateless strategies ignore it.
* The result (``Plan``) is an ordered list of layers, bottom first, each a list of paths. Every
  path of ``build.files`` must appear in exactly one layer (``check_plan`` enforces it); empty
  layers are dropped by the scorer. Order matters for Docker's classic store (prefix reuse).

Strategies here (see /work/shared/docs/prior-art.md for the descriptions they follow):
as-built, squashed, per-source (unbounded reference), apko-origin, nix-popularity,
ostree-ext (basic_packing with the previous build's plan), ostree-ext-fresh (no prior), chunkah.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable

from model import Build, changelog_days, changelog_freq

Plan = list[list[str]]
Prev = tuple[Build, Plan]
Strategy = Callable[[Build, int, "Prev | None"], Plan]

UNOWNED = "<unowned>"


def check_plan(build: Build, plan: Plan) -> None:
    seen: set[str] = set()
    for layer in plan:
        for p in layer:
            if p in seen:
                raise ValueError(f"plan: {p} is in two layers")
            if p not in build.files:
                raise ValueError(f"plan: {p} is not in the build")
            seen.add(p)
    if len(seen) != len(build.files):
        missing = sorted(set(build.files) - seen)[:5]
        raise ValueError(f"plan: {len(build.files) - len(seen)} paths in no layer, e.g. {missing}")


def _group_paths(build: Build, key: Callable[[str | None], str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for p, r in build.files.items():
        groups[key(r.owner)].append(p)
    return groups


def _size(build: Build, paths: Iterable[str]) -> int:
    return sum(build.files[p].size for p in paths)


def _newest_change(build: Build) -> int:
    """The reference time for change frequencies: the newest changelog entry in the image."""
    return max((d for i in build.packages.values() for d in i.changelog_dates[:1]), default=0)


# ---------------------------------------------------------------- trivial references


def as_built(build: Build, budget: int, prev: Prev | None) -> Plan:
    return [list(layer) for layer in build.as_built]


def squashed(build: Build, budget: int, prev: Prev | None) -> Plan:
    return [sorted(build.files)]


def per_source(build: Build, budget: int, prev: Prev | None) -> Plan:
    """One layer per source package, unbounded (design-notes §2 reference), unowned on top."""
    groups = _group_paths(build, lambda o: build.source_of(o) or UNOWNED)
    names = sorted(g for g in groups if g != UNOWNED)
    return [sorted(groups[g]) for g in names] + [sorted(groups.get(UNOWNED, []))]


# ---------------------------------------------------------------- apko origin


def apko_origin(build: Build, budget: int, prev: Prev | None) -> Plan:
    """apko ``layering: {strategy: origin}``: largest origin groups, an overflow, unowned on top.

    apko's ``budget: N`` yields N+1 layers (N package layers + the unowned top layer), so it is
    called with N = budget-1 to give the same total as every other strategy.
    """
    n = budget - 1
    # origin = source package; packages linked by Replaces are merged into one group
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for info in build.packages.values():
        union("src:" + info.source, "src:" + info.source)
        for r in info.replaces:
            if r in build.packages:
                union("src:" + info.source, "src:" + build.packages[r].source)

    def key(owner: str | None) -> str:
        src = build.source_of(owner)
        return UNOWNED if src is None else find("src:" + src)

    groups = _group_paths(build, key)
    isize: dict[str, int] = defaultdict(int)
    for info in build.packages.values():
        isize[find("src:" + info.source)] += info.installed_kib
    names = sorted((g for g in groups if g != UNOWNED), key=lambda g: (-isize[g], g))
    keep, rest = names[: n - 1], names[n - 1 :]
    plan = [sorted(groups[g]) for g in keep]
    plan.append(sorted(p for g in rest for p in groups[g]))
    plan.append(sorted(groups.get(UNOWNED, [])))
    return plan


# ---------------------------------------------------------------- Nix popularity


def _sccs(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (dpkg graphs have cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on.add(v)
            succ = edges.get(v, [])
            if i < len(succ):
                work.append((v, i + 1))
                w = succ[i]
                if w not in index:
                    work.append((w, 0))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
    return out


def popularity(build: Build) -> dict[str, int]:
    """Number of routes from a root (a package nothing depends on) to each package."""
    nodes = sorted(build.packages)
    edges = {n: sorted(d for d in build.packages[n].depends if d in build.packages) for n in nodes}
    comps = _sccs(nodes, edges)  # reverse topological order (sinks first)
    comp_of = {v: i for i, c in enumerate(comps) for v in c}
    cedges: dict[int, set[int]] = defaultdict(set)
    indeg: dict[int, int] = defaultdict(int)
    for u in nodes:
        for v in edges[u]:
            cu, cv = comp_of[u], comp_of[v]
            if cu != cv and cv not in cedges[cu]:
                cedges[cu].add(cv)
                indeg[cv] += 1
    pop = [0] * len(comps)
    for i in range(len(comps)):
        if indeg[i] == 0:
            pop[i] = 1
    for i in reversed(range(len(comps))):  # sources first
        for j in cedges[i]:
            pop[j] += pop[i]
    return {v: pop[comp_of[v]] for v in nodes}


def nix_popularity(build: Build, budget: int, prev: Prev | None) -> Plan:
    """nixpkgs/nix2container popularity: top budget-1 packages alone, everything else in one."""
    pop = popularity(build)
    order = sorted(pop, key=lambda n: (-pop[n], n))
    groups = _group_paths(build, lambda o: o or UNOWNED)
    top = [n for n in order if n in groups][: budget - 1]
    chosen = set(top)
    plan = [sorted(groups[n]) for n in top]
    plan.append(sorted(p for g, ps in groups.items() if g not in chosen for p in ps))
    return plan


# ---------------------------------------------------------------- ostree-ext basic_packing

U32_MAX = 2**32 - 1


def _median_mad(xs: list[float]) -> tuple[float, float]:
    med = statistics.median(xs)
    return med, statistics.median(abs(x - med) for x in xs)


def _bucket(x: float, mean: float, sd: float) -> int:
    return 0 if x < mean - 2 * sd else (2 if x > mean + 2 * sd else 1)


def _ostree_pack(
    comps: dict[str, tuple[int, int]], budget: int
) -> tuple[list[list[str]], list[str]]:
    """basic_packing over components {name: (size, frequency)} -> (bins, max-frequency bin)."""
    maxfreq = sorted(c for c, (_, f) in comps.items() if f == U32_MAX)
    rest = {c: v for c, v in comps.items() if v[1] != U32_MAX}
    if len(rest) + 1 < budget:
        return [[c] for c in sorted(rest)], maxfreq
    sizes = [float(s) for s, _ in rest.values()]
    med, mad = _median_mad(sizes)
    hi_limit = med + 2 * mad
    lo_limit = 0.5 * abs(med - 2 * mad)
    n_bins = budget - 1  # the max-frequency (unpackaged) bin is layer 0
    hs_cap = int(0.6 * (budget - 3))  # minus layer 0, the low-size and the new-packages bins
    ms_cap = n_bins - hs_cap - 2
    by_size = sorted(rest, key=lambda c: (-rest[c][0], c))
    high = [c for c in by_size if rest[c][0] >= hi_limit]
    singles, spill = high[:hs_cap], high[hs_cap:]
    low = sorted(c for c in by_size if rest[c][0] <= lo_limit and c not in high)
    medium = [c for c in by_size if c not in set(high) | set(low)] + spill
    bins: list[list[str]] = [[c] for c in singles]
    if medium:
        freqs = [float(rest[c][1]) for c in medium]
        msz = [float(rest[c][0]) for c in medium]
        fm, fsd = statistics.mean(freqs), statistics.pstdev(freqs)
        sm, ssd = statistics.mean(msz), statistics.pstdev(msz)
        buckets: dict[int, list[str]] = defaultdict(list)
        for c in sorted(medium, key=lambda c: (-rest[c][1], c)):
            b = 3 * _bucket(rest[c][1], fm, fsd) + _bucket(rest[c][0], sm, ssd)
            buckets[b].append(c)
        per_bin = max(1, math.ceil(len(medium) / max(1, ms_cap)))
        mbins: list[list[str]] = []
        for b in sorted(buckets, reverse=True):  # most frequent, largest first
            cs = buckets[b]
            mbins.extend(cs[i : i + per_bin] for i in range(0, len(cs), per_bin))
        while len(mbins) > max(1, ms_cap):
            last = mbins.pop()
            mbins[-1] = mbins[-1] + last
        bins.extend(mbins)
    bins.append(low)
    return bins, maxfreq


def _ostree_components(build: Build) -> dict[str, tuple[int, int]]:
    ref = _newest_change(build)
    comps: dict[str, tuple[int, int]] = {}
    sizes: dict[str, int] = defaultdict(int)
    for r in build.files.values():
        if r.owner is not None:
            sizes[r.owner] += r.size
    for name, info in build.packages.items():
        comps[name] = (sizes.get(name, 0), changelog_freq(info, ref))
    return comps


def _bins_to_plan(build: Build, bins: list[list[str]], new_bin: list[str]) -> Plan:
    groups = _group_paths(build, lambda o: o or UNOWNED)
    plan = [sorted(groups.get(UNOWNED, []))]  # layer 0: unmapped content (+ max-frequency)
    for b in [*bins, new_bin]:
        plan.append(sorted(p for c in b for p in groups.get(c, [])))
    return plan


def ostree_ext_fresh(build: Build, budget: int, prev: Prev | None) -> Plan:
    """ostree-ext basic_packing without a previous build (a first build, or a plan reset)."""
    bins, maxfreq = _ostree_pack(_ostree_components(build), budget)
    if maxfreq:
        bins = [maxfreq, *bins]
    return _bins_to_plan(build, bins, [])


def ostree_ext(build: Build, budget: int, prev: Prev | None) -> Plan:
    """basic_packing with ``--previous-build``: old bins kept, new packages into the last bin."""
    if prev is None:
        return ostree_ext_fresh(build, budget, None)
    pbuild, pplan = prev
    bins: list[list[str]] = []
    placed: set[str] = set()
    for layer in pplan[1:]:  # layer 0 is the unmapped layer
        comps = sorted({o for p in layer if (o := pbuild.files[p].owner) is not None})
        bins.append([c for c in comps if c in build.packages])
        placed.update(comps)
    new = sorted(c for c in build.packages if c not in placed)
    if len([b for b in bins if b]) + 2 > budget:
        return ostree_ext_fresh(build, budget, None)
    # the previous plan's last bin is the new-packages bin: add to it
    if bins:
        bins[-1] = sorted(set(bins[-1]) | set(new))
    else:
        bins = [new]
    return _bins_to_plan(build, bins[:-1], bins[-1])


# ---------------------------------------------------------------- chunkah


def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


BIGFILE = 1 << 20


def chunkah(build: Build, budget: int, prev: Prev | None) -> Plan:
    """chunkah's packing: source-package components, big unclaimed files alone, stability tiers."""
    ref = _newest_change(build)
    comps: dict[str, list[str]] = defaultdict(list)
    for p, r in build.files.items():
        src = build.source_of(r.owner)
        if src is not None:
            comps["src:" + src].append(p)
        elif r.kind == "reg" and r.size >= BIGFILE:
            comps["bigfile:" + p].append(p)
        else:
            comps["unclaimed"].append(p)
    # stability = exp(-lambda * 7 days), lambda = distinct changelog days per day over a year
    days: dict[str, int] = defaultdict(int)
    for info in build.packages.values():
        k = "src:" + info.source
        days[k] = max(days[k], changelog_days(info, ref))
    stab = {c: (math.exp(-(days[c] / 365.0) * 7) if c.startswith("src:") else 0.0) for c in comps}
    size = {c: sum(build.files[p].size for p in ps) for c, ps in comps.items()}
    names = sorted(comps)
    med, mad = _median_mad([float(size[c]) for c in names])
    outliers = sorted((c for c in names if size[c] > med + 1.5 * mad), key=lambda c: (-size[c], c))
    singles = outliers[: int(0.8 * budget)]
    rest = [c for c in names if c not in set(singles)]
    nbins = max(1, budget - len(singles))
    tiers: list[list[str]] = [[], [], []]  # most stable first
    if rest:
        vals = [stab[c] for c in rest]
        mu, sd = statistics.mean(vals), statistics.pstdev(vals)
        for c in rest:
            tiers[0 if stab[c] > mu + sd else (2 if stab[c] < mu - sd else 1)].append(c)
    tier_bytes = [sum(size[c] for c in t) for t in tiers]
    total = sum(tier_bytes) or 1
    alloc = [max(1, round(nbins * b / total)) if tiers[i] else 0 for i, b in enumerate(tier_bytes)]
    while sum(alloc) > nbins:
        i = max(range(3), key=lambda j: alloc[j])
        alloc[i] -= 1
    layers: list[tuple[float, str, list[str]]] = []
    for c in singles:
        layers.append((stab[c], c, sorted(comps[c])))
    for t, cs in enumerate(tiers):
        if not cs:
            continue
        bins: list[list[str]] = [[] for _ in range(alloc[t])]
        for c in cs:
            bins[fnv1a64(c) % alloc[t]].extend(comps[c])
        for i, b in enumerate(bins):
            tstab = statistics.mean(stab[c] for c in cs)
            layers.append((tstab, f"tier{t}/{i:03d}", sorted(b)))
    layers.sort(key=lambda x: (-x[0], x[1]))  # most stable first
    return [ps for _, _, ps in layers]


STRATEGIES: dict[str, Strategy] = {
    "as-built": as_built,
    "squashed": squashed,
    "per-source (unbounded)": per_source,
    "apko-origin": apko_origin,
    "nix-popularity": nix_popularity,
    "ostree-ext": ostree_ext,
    "ostree-ext-fresh": ostree_ext_fresh,
    "chunkah": chunkah,
}
