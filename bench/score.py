"""Score layering strategies by what an update makes clients pull.

For a plan (ordered layers of paths) a layer's identity is the hash of its entries (path, kind,
mode, owner ids, size, content hash and mtime), so a layer is pulled when any of that changed.
Three mtime policies are scored: ``as-built`` (the real mtimes, with the build's wall-clock
stamps on everything dpkg and maintainer scripts wrote, directories included: dpkg does not keep
a directory's archive mtime once files are added to it), ``dirs-clamped`` (only directories
clamped: what remains is the files dpkg and scripts wrote) and ``clamped`` (design-notes §1:
an owned path's mtime clamped to its package's newest payload mtime, an unowned one to
SOURCE_DATE_EPOCH). A fourth mode, ``pkgchunk-policy``, is registered by
``pkgchunk_strategy.py``: every path gets the mtime pkgchunk's own policy gives it
(``pkgchunk.apply_mtimes``, with the directory limit carried along the chain as the CLI
carries it) and every layer also carries the parent directories it needs, as pkgchunk's
writer (and any tar writer that keeps directory metadata) does. It applies to every strategy:
the same metadata for all, so only the layering differs. Sizes are the per-file gzip
estimates of ``model.py``.

Per update (previous build -> build) and strategy:
  pulled        compressed bytes of layers whose digest the client does not have (reuse by digest
                anywhere: containerd, containers/image)
  pulled_docker Docker's classic store: reuse only along the common prefix of the layer list
  floor         compressed bytes of only the entries whose content changed or are new
  ratio         pulled / floor
  reuse         share of the image's compressed bytes that was not pulled
"""

from __future__ import annotations

import hashlib
import itertools
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from model import Build
from strategies import Plan, Prev, Strategy, check_plan

MODES: tuple[str, ...] = ("as-built", "dirs-clamped", "clamped")
#: Modes whose mtimes come from a function of the build (``pkgchunk_strategy`` registers
#: ``pkgchunk-policy``: pkgchunk's own clamp policy); these modes are scored after MODES.
EXTERNAL_MTIMES: dict[str, Callable[[Build], Mapping[str, int]]] = {}
#: Modes whose layers carry every parent directory they need, as a real layer writer does.
WITH_PARENTS = {"pkgchunk-policy"}


def modes() -> tuple[str, ...]:
    return MODES + tuple(m for m in EXTERNAL_MTIMES if m not in MODES)


def entry_hashes(build: Build, mode: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    external = EXTERNAL_MTIMES[mode](build) if mode in EXTERNAL_MTIMES else None
    for p, r in build.files.items():
        clamp = mode == "clamped" or (mode == "dirs-clamped" and r.kind == "dir")
        mt = build.clamped_mtime(p) if clamp else r.mtime
        if external is not None:
            mt = external[p]
        rec = f"{p}\0{r.kind}\0{r.mode}\0{r.uid}\0{r.gid}\0{r.size}\0{r.digest}\0{mt}"
        out[p] = hashlib.blake2b(rec.encode("utf-8", "surrogateescape"), digest_size=16).digest()
    return out


@dataclass(frozen=True)
class Layer:
    digest: bytes
    csize: int
    files: int


def with_parents(build: Build, paths: list[str]) -> list[str]:
    """The paths plus every ancestor directory the build has (what a tar layer writer adds)."""
    out = set(paths)
    for p in paths:
        head = p.rpartition("/")[0]
        while head and head not in out:
            if head in build.files:
                out.add(head)
            head = head.rpartition("/")[0]
    return list(out)


def layers_of(
    build: Build, plan: Plan, hashes: dict[str, bytes], parents: bool = False
) -> list[Layer]:
    out = []
    for paths in plan:
        if not paths:
            continue
        ps = sorted(with_parents(build, paths) if parents else paths)
        d = hashlib.blake2b(b"".join(hashes[p] for p in ps), digest_size=16).digest()
        out.append(Layer(d, sum(build.files[p].csize for p in ps), len(ps)))
    return out


def floor_bytes(prev: Build, cur: Build) -> int:
    n = 0
    for p, r in cur.files.items():
        o = prev.files.get(p)
        if o is None or o.kind != r.kind or o.digest != r.digest:
            n += r.csize
    return n


def update_cost(prev: list[Layer], cur: list[Layer], floor: int) -> dict[str, float]:
    have = {x.digest for x in prev}
    pulled = sum(x.csize for x in cur if x.digest not in have)
    i = 0
    while i < min(len(prev), len(cur)) and prev[i].digest == cur[i].digest:
        i += 1
    docker = sum(x.csize for x in cur[i:])
    total = sum(x.csize for x in cur)
    return {
        "layers": len(cur),
        "total": total,
        "pulled": pulled,
        "pulled_docker": docker,
        "floor": floor,
        "ratio": pulled / floor if floor else float("inf"),
        "ratio_docker": docker / floor if floor else float("inf"),
        "reuse": 1 - pulled / total if total else 0.0,
        "layers_pulled": sum(1 for x in cur if x.digest not in have),
        "layer_reuse": 1 - sum(1 for x in cur if x.digest not in have) / len(cur) if cur else 0.0,
        "largest_layer": max((x.csize for x in cur), default=0),
    }


def plan_chain(
    strategy: Strategy, builds: list[Build], budget: int
) -> list[Plan]:
    """Plans for consecutive builds, each strategy seeing its own previous plan."""
    plans: list[Plan] = []
    prev: Prev | None = None
    for b in builds:
        plan = strategy(b, budget, prev)
        check_plan(b, plan)
        plans.append(plan)
        prev = (b, plan)
    return plans


def score_chain(
    strategies: dict[str, Strategy],
    builds: list[Build],
    budgets: list[int],
    progress: Callable[[str], None] = lambda s: None,
) -> dict[str, dict[str, dict[str, dict[str, object]]]]:
    """{budget: {strategy: {mode: {"updates": [...], summary stats}}}} over consecutive builds."""
    hashes = {m: [entry_hashes(b, m) for b in builds] for m in modes()}
    floors = [floor_bytes(a, b) for a, b in itertools.pairwise(builds)]
    res: dict[str, dict[str, dict[str, dict[str, object]]]] = {}
    for budget in budgets:
        res[str(budget)] = {}
        for name, strat in strategies.items():
            plans = plan_chain(strat, builds, budget)
            res[str(budget)][name] = {}
            for m in modes():
                ls = [
                    layers_of(b, p, h, m in WITH_PARENTS)
                    for b, p, h in zip(builds, plans, hashes[m], strict=True)
                ]
                ups = [update_cost(ls[i], ls[i + 1], floors[i]) for i in range(len(builds) - 1)]
                res[str(budget)][name][m] = summarise(ups)
            progress(f"budget {budget}: {name}")
    return res


def summarise(ups: list[dict[str, float]]) -> dict[str, object]:
    def mean(k: str) -> float:
        return statistics.mean(u[k] for u in ups)

    def worst(k: str) -> float:
        return max(u[k] for u in ups)

    return {
        "layers": ups[-1]["layers"],
        "total": ups[-1]["total"],
        "pulled_mean": mean("pulled"),
        "pulled_worst": worst("pulled"),
        "pulled_docker_mean": mean("pulled_docker"),
        "floor_mean": mean("floor"),
        "ratio_mean": mean("pulled") / mean("floor") if mean("floor") else float("inf"),
        "ratio_worst": worst("ratio"),
        "ratio_docker_mean": (
            mean("pulled_docker") / mean("floor") if mean("floor") else float("inf")
        ),
        "reuse_mean": mean("reuse"),
        "layer_reuse_mean": mean("layer_reuse"),
        "largest_layer": ups[-1]["largest_layer"],
        "updates": ups,
    }


def table(res: dict[str, dict[str, dict[str, dict[str, object]]]], title: str, mode: str) -> str:
    """A markdown table of one result block for one mtime mode."""
    mb = 1e6
    lines = [f"#### {title} — mtimes {mode}", ""]
    lines.append(
        "| budget | strategy | layers | total MB | pulled MB (mean) | worst MB | x floor | "
        "worst x floor | bytes reused % | layers reused % | Docker prefix MB | Docker x floor |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for budget, by in res.items():
        for name, modes in by.items():
            s = modes[mode]
            lines.append(
                f"| {budget} | {name} | {s['layers']} | {s['total'] / mb:.1f} | "
                f"{s['pulled_mean'] / mb:.1f} | {s['pulled_worst'] / mb:.1f} | "
                f"{s['ratio_mean']:.2f} | {s['ratio_worst']:.2f} | {100 * s['reuse_mean']:.1f} | "
                f"{100 * s['layer_reuse_mean']:.1f} | "
                f"{s['pulled_docker_mean'] / mb:.1f} | {s['ratio_docker_mean']:.2f} |"
            )
    floor = next(iter(next(iter(res.values())).values()))[mode]["floor_mean"]
    lines += ["", f"floor (compressed bytes of changed/new files), mean: {floor / mb:.1f} MB", ""]
    return "\n".join(lines)
