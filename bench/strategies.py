"""Layering strategies the benchmark scores: re-implemented from descriptions, or ported from code.

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

Strategies here: as-built, squashed, per-source (unbounded reference), apko-origin and
nix-popularity (re-implemented from /work/shared/docs/prior-art.md), ostree-ext (basic_packing
with the previous build's plan), ostree-ext-fresh (no prior) and chunkah: these three are ports
of the real code, at the commits cited in their sections below.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable

from model import Build, changelog_freq

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
#
# Ported (algorithm, not text) from ostreedev/ostree-rs-ext lib/src/chunking.rs and
# lib/src/statistics.rs at commit b885f9468829e6af41fa95504d65975c48378d4d (2024-11-07):
# ``basic_packing``, ``get_partitions_with_threshold`` and ``basic_packing_with_prior_build``.
# What the benchmark supplies, since chunking.rs only receives it: components are binary
# packages (rpm-ostree's are packages too), a component's size is the bytes of the non-directory
# paths it owns (ostree objects; directories are dirtree/dirmeta objects of the commit, so they go
# to layer 0 with every unowned path), its change_frequency is ``model.changelog_freq`` (changelog
# entries in the year before the newest one in the image; rpm-ostree's exact definition lives in
# rpm-ostree, not read). Not modelled: content-object dedup (hard links, identical files).

U32_MAX = 2**32 - 1
OSTREE_MIN_CHUNKED_LAYERS = 4
OSTREE_HIGH_SIZE_CUTOFF = 0.6
OSTREE_THRESHOLD = 2.0


def _median_mad(xs: list[float]) -> tuple[float, float]:
    med = statistics.median(xs)
    return med, statistics.median(abs(x - med) for x in xs)


def _ostree_partitions(
    comps: list[tuple[str, int, int]], limit_hs_bins: int
) -> dict[str, list[tuple[str, int, int]]]:
    """get_partitions_with_threshold: comps (name, size, freq) sorted by size, largest first.

    Keys sort like the original's BTreeMap keys: "1hs" (high-size singletons), "2ls" (the one
    low-size bin), then "3hf_*", "4mf_*", "5lf_*" (frequency high to low) x "hs", "ls", "ms".
    """
    parts: dict[str, list[tuple[str, int, int]]] = {}
    med, mad = _median_mad([float(c[1]) for c in comps])
    lo_limit = 0.5 * abs(med - OSTREE_THRESHOLD * mad)
    hi_limit = med + OSTREE_THRESHOLD * mad
    high: list[tuple[str, int, int]] = []
    medium: list[tuple[str, int, int]] = []
    for c in comps:
        if c[1] >= hi_limit:
            high.append(c)
        elif c[1] <= lo_limit:
            parts.setdefault("2ls", []).append(c)
        else:
            medium.append(c)
    rest = high[limit_hs_bins:] + medium  # extra high-size ones join the medium pool
    parts["1hs"] = high[:limit_hs_bins]
    rest.sort(key=lambda c: c[2])  # ascending frequency (stable: size order within a frequency)
    if not rest:
        return parts
    sizes = [float(c[1]) for c in rest]
    freqs = [float(c[2]) for c in rest]
    fm, fsd = statistics.mean(freqs), statistics.pstdev(freqs)
    sm, ssd = statistics.mean(sizes), statistics.pstdev(sizes)
    f_lo, f_hi = 0.5 * abs(fm - OSTREE_THRESHOLD * fsd), fm + OSTREE_THRESHOLD * fsd
    s_lo, s_hi = 0.5 * abs(sm - OSTREE_THRESHOLD * ssd), sm + OSTREE_THRESHOLD * ssd
    for c in rest:
        size_name = "hs" if c[1] >= s_hi else ("ls" if c[1] <= s_lo else "ms")
        freq_name = "3hf" if c[2] >= f_hi else ("5lf" if c[2] <= f_lo else "4mf")
        parts.setdefault(f"{freq_name}_{size_name}", []).append(c)
    return parts


def ostree_basic_packing(comps: list[tuple[str, int, int]], budget: int) -> list[list[str]]:
    """basic_packing without a prior build: bins of component names, the last one empty.

    ``comps`` is (name, size, change_frequency), sorted by size, largest first (as
    ``ObjectMetaSized::compute_sizes`` sorts them). Bins in the original's order: high-size
    singletons, the low-size bin, the medium partitions (merged pairwise from the end when over
    the limit), the max-frequency bin, the empty bin reserved for new packages.
    """
    if budget < OSTREE_MIN_CHUNKED_LAYERS:
        raise ValueError(f"ostree-ext needs at least {OSTREE_MIN_CHUNKED_LAYERS} layers")
    if len(comps) < budget:
        return [[c[0]] for c in comps] + ([[]] if comps else [])
    normal = [c for c in comps if c[2] != U32_MAX]
    maxfreq = [c[0] for c in comps if c[2] == U32_MAX]
    r: list[list[str]] = []
    if normal:
        limit_ls, limit_new = 1, 1
        limit_maxfreq = min(len(maxfreq), 1)
        reserved = limit_ls + limit_new + limit_maxfreq
        limit_hs = math.floor(OSTREE_HIGH_SIZE_CUTOFF * (budget - reserved))
        limit_ms = budget - (limit_hs + reserved)
        parts = _ostree_partitions(normal, limit_hs)
        n_low = len(parts.get("2ls", []))
        if limit_ms <= 0:
            raise ValueError("ostree-ext: no medium-size bins")
        per_bin = (len(normal) - limit_hs - n_low) // limit_ms
        for key in sorted(parts):
            pkgs = [c[0] for c in parts[key]]
            if key == "1hs":
                r.extend([c] for c in pkgs)
            elif key == "2ls":
                r.append(pkgs)
            else:
                cur: list[str] = []
                for i, c in enumerate(pkgs):
                    if len(cur) < per_bin:
                        cur.append(c)
                    else:
                        r.append(cur)
                        cur = [c]
                    if i == len(pkgs) - 1 and cur:
                        r.append(cur)
                        cur = []
        target = budget - limit_new - limit_maxfreq
        while len(r) > target:
            # the original walks i = start, start+2, ... < len-1 from the top down, merging
            # r[i-1] and r[i] and re-inserting the merge at index i (after the former r[i+1])
            for i in reversed(range(limit_ls + limit_hs, len(r) - 1, 2)):
                if len(r) <= target:
                    break
                merged = r[i - 1] + r[i]
                del r[i]
                del r[i - 1]
                r.insert(i, merged)
    if maxfreq:
        r.append(maxfreq)
    r.append([])
    return r


def _ostree_components(build: Build) -> list[tuple[str, int, int]]:
    ref = _newest_change(build)
    sizes: dict[str, int] = defaultdict(int)
    for r in build.files.values():
        if r.owner is not None and r.kind != "dir":
            sizes[r.owner] += r.size
    comps = []
    for name in sorted(sizes):  # compute_sizes: BTreeMap order, then a stable sort by size
        info = build.packages.get(name)
        comps.append((name, sizes[name], changelog_freq(info, ref) if info else 0))
    comps.sort(key=lambda c: -c[1])
    return comps


def _ostree_layer0(build: Build, p: str) -> bool:
    r = build.files[p]
    return r.owner is None or r.kind == "dir"


def _bins_to_plan(build: Build, bins: list[list[str]]) -> Plan:
    """Layer 0: the commit (directories, unowned content); then one layer per bin."""
    groups: dict[str, list[str]] = defaultdict(list)
    layer0: list[str] = []
    for p in build.files:
        if _ostree_layer0(build, p):
            layer0.append(p)
        else:
            groups[build.files[p].owner or UNOWNED].append(p)
    plan = [sorted(layer0)]
    for b in bins:
        plan.append(sorted(p for c in b for p in groups.get(c, [])))
    return plan


def _ostree_bins_of(build: Build, plan: Plan) -> list[list[str]]:
    """The bins a previous plan encoded (its layer annotations): layers 1.. by owner."""
    bins = []
    for layer in plan[1:]:
        bins.append(sorted({o for p in layer if (o := build.files[p].owner) is not None
                            and not _ostree_layer0(build, p)}))
    return bins


def ostree_ext_fresh(build: Build, budget: int, prev: Prev | None) -> Plan:
    """ostree-ext basic_packing without a previous build (a first build, or a plan reset)."""
    return _bins_to_plan(build, ostree_basic_packing(_ostree_components(build), budget))


def ostree_ext(build: Build, budget: int, prev: Prev | None) -> Plan:
    """basic_packing_with_prior_build: the previous bins kept, new packages into the last bin."""
    if prev is None:
        return ostree_ext_fresh(build, budget, None)
    pbuild, pplan = prev
    bins = _ostree_bins_of(pbuild, pplan)
    if not bins:
        return ostree_ext_fresh(build, budget, None)
    current = {c[0] for c in _ostree_components(build)}
    previous = {c for b in bins for c in b}
    bins[-1] = bins[-1] + sorted(current - previous)  # the reserved bin takes added packages
    return _bins_to_plan(build, [[c for c in b if c in current] for b in bins])


# ---------------------------------------------------------------- chunkah
#
# Ported (algorithm, not text) from coreos/chunkah at commit
# 4c8abc389c27fe6d57c082f6817f70b723d995a5 (2026-08-03): src/packing.rs (``calculate_packing``,
# ``isolate_size_outliers``, ``bin_by_stability_tiers``, ``allocate_tier_bins``,
# ``hash_into_bins``), src/utils.rs (``calculate_stability``), src/components/bigfiles.rs and
# src/components/mod.rs (claims, the unclaimed catch-all), src/cmd_build.rs (``pack_components``).
# chunkah reads rpm and alpm databases only; for dpkg images a component is a source package
# named ``deb/SOURCE`` (as ``rpm/SRPM``), its stability the lowest of its binary packages', as
# chunkah does for the RPMs of one SRPM. Deviations: a directory several packages own is claimed
# by all of them in chunkah (written into each layer); a plan here holds a path once, so it goes
# to the unclaimed component. A package without changelog falls back to the build time in
# chunkah; the benchmark has none, so it counts as "no change in the lookback" (0.99). Hard
# links are not grouped.

CHUNKAH_SIZE_OUTLIER_THRESHOLD = 1.5
CHUNKAH_HIGH_SIZE_CAP = 0.8
CHUNKAH_PERIOD_DAYS = 7.0
CHUNKAH_LOOKBACK_DAYS = 365
BIGFILE = 1 << 20
DAY = 86400


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def chunkah_hash(name: str) -> int:
    """Rust's ``str::hash`` into an FnvHasher: the bytes, then a 0xff terminator, FNV-1a 64."""
    return fnv1a64(name.encode() + b"\xff")


def chunkah_stability(changelog: Iterable[int], now: int) -> float:
    """P(no change in 7 days), Poisson; lambda = distinct-day changes / days since the oldest."""
    lookback = now - CHUNKAH_LOOKBACK_DAYS * DAY
    window = [t for t in changelog if t >= lookback]
    count, prev_day = 0, None
    for t in window:  # consecutive same-day entries count once
        day = t // DAY
        if day != prev_day:
            count += 1
            prev_day = day
    if count == 0:
        return 0.99
    span = (now - min(window)) / DAY
    if span < 1.0:
        return 0.0
    return math.exp(-(count / span) * CHUNKAH_PERIOD_DAYS)


def _chunkah_median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


ChunkahItem = tuple[str, int, float]  # name, size, stability


def _chunkah_group(items: list[ChunkahItem], idx: list[int]) -> tuple[list[int], float]:
    return idx, math.prod(items[i][2] for i in idx)


def _chunkah_hash_bins(
    items: list[ChunkahItem], idx: list[int], n: int
) -> list[tuple[list[int], float]]:
    if not idx or n == 0:
        return []
    bins: list[list[int]] = [[] for _ in range(n)]
    for i in idx:
        bins[chunkah_hash(items[i][0]) % n].append(i)
    empty = [b for b in range(n) if not bins[b]]
    while empty:  # refill empty bins with the largest item of a bin holding more than one
        target = empty.pop()
        best: tuple[int, int, int] | None = None  # (bin, position, item)
        for b, members in enumerate(bins):
            if len(members) > 1:
                for pos, i in enumerate(members):
                    if best is None or items[i][1] >= items[best[2]][1]:
                        best = (b, pos, i)  # max_by_key keeps the last maximum
        if best is None:
            break
        b, pos, moved = best
        members = bins[b]
        members[pos] = members[-1]  # Vec::swap_remove: the last member takes its place
        members.pop()
        bins[target].append(moved)
    return [_chunkah_group(items, b) for b in bins if b]


def _chunkah_tier_bins(counts: list[int], max_bins: int) -> list[int]:
    non_empty = sum(1 for c in counts if c)
    total = sum(counts)
    out = [0] * len(counts)
    allocated = seen = 0
    for i, c in enumerate(counts):
        if not c:
            continue
        seen += 1
        if seen == non_empty:
            out[i] = max(0, max_bins - allocated)
        else:
            prop = max(1, int(_round_half_away(c / total * max_bins)))
            out[i] = min(prop, max(0, max_bins - (allocated + non_empty - seen)))
            allocated += out[i]
    return out


def _round_half_away(x: float) -> float:
    """Rust's f64::round: halves away from zero (Python's round is to even)."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def chunkah_packing(items: list[ChunkahItem], max_groups: int) -> list[list[int]]:
    """calculate_packing: groups of item indices, most stable first."""
    if not items or max_groups == 0:
        return []
    if len(items) <= max_groups:
        groups = [([i], items[i][2]) for i in range(len(items))]
    else:
        sizes = [float(it[1]) for it in items]
        med = _chunkah_median(sizes)
        mad = _chunkah_median([abs(x - med) for x in sizes])
        if mad < med * 0.01:
            mad = med
        limit = med + CHUNKAH_SIZE_OUTLIER_THRESHOLD * mad
        high = [i for i, it in enumerate(items) if it[1] >= limit]
        remaining = [i for i, it in enumerate(items) if it[1] < limit]
        reserved = 1 if remaining else 0
        cap = math.floor(max(0, max_groups - reserved) * CHUNKAH_HIGH_SIZE_CAP)
        if len(high) > cap:
            high.sort(key=lambda i: -items[i][1])  # stable, as Rust's sort_by
            remaining.extend(high[cap:])
            high = high[:cap]
        groups = [([i], items[i][2]) for i in high]
        if remaining:
            budget = max_groups - len(groups)
            groups.extend(_chunkah_tiers(items, remaining, budget))
    groups.sort(key=lambda g: -g[1])  # stable: ties keep singletons, then tiers, in order
    return [g for g, _ in groups]


def _chunkah_tiers(
    items: list[ChunkahItem], idx: list[int], max_bins: int
) -> list[tuple[list[int], float]]:
    if not idx or max_bins == 0:
        return []
    if len(idx) <= max_bins:
        return [([i], items[i][2]) for i in idx]
    stab = [items[i][2] for i in idx]
    mean = sum(stab) / len(stab)
    sd = statistics.pstdev(stab) if len(stab) > 1 else 0.0
    hi, lo = mean + sd, mean - sd
    tiers: list[list[int]] = [[], [], []]
    for i in idx:
        s = items[i][2]
        tiers[0 if s >= hi else (2 if s <= lo else 1)].append(i)
    counts = [len(t) for t in tiers]
    if max_bins < sum(1 for c in counts if c):
        return _chunkah_hash_bins(items, idx, max_bins)
    out: list[tuple[list[int], float]] = []
    for tier, n in zip(tiers, _chunkah_tier_bins(counts, max_bins), strict=True):
        out.extend(_chunkah_hash_bins(items, tier, n))
    return out


def _chunkah_components(build: Build) -> dict[str, list[str]]:
    """chunkah's claims: package components, then big unclaimed files, then the catch-all."""
    rpm = any(p.startswith(("var/lib/rpm", "usr/lib/sysimage/rpm")) for p in build.files)
    repo = "rpm" if rpm else "deb"
    comps: dict[str, list[str]] = defaultdict(list)
    big: list[str] = []
    for p in sorted(build.files):
        r = build.files[p]
        src = build.source_of(r.owner)
        if src is not None:
            comps[f"{repo}/{src}"].append(p)
        elif r.kind == "reg" and r.size >= BIGFILE:
            big.append(p)
        else:
            comps["chunkah/unclaimed"].append(p)
    names: set[str] = set()
    for p in big:  # component named by file name, the full path when that name is taken
        base = p.rsplit("/", 1)[-1]
        name = base if base not in names else p
        names.add(name)
        comps[f"bigfiles/{name}"].append(p)
    return comps


def chunkah(build: Build, budget: int, prev: Prev | None) -> Plan:
    """chunkah's packing (stateless): size outliers alone, stability tiers, FNV-1a hash bins."""
    comps = _chunkah_components(build)
    stab_of: dict[str, float] = {}
    for info in build.packages.values():
        for repo in ("deb", "rpm"):
            k = f"{repo}/{info.source}"
            if k in comps:
                s = chunkah_stability(info.changelog_dates, build.sde)
                stab_of[k] = min(stab_of.get(k, 1.0), s)
    names = sorted(comps)
    items: list[ChunkahItem] = [
        (c, sum(build.files[p].size for p in comps[c]), stab_of.get(c, 0.0)) for c in names
    ]
    return [sorted(p for i in g for p in comps[names[i]]) for g in chunkah_packing(items, budget)]


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
