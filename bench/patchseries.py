#!/usr/bin/env python3
"""Patch layers over a series of updates, in the scoring model: the amortised cost.

    python3 bench/patchseries.py --work bench/work --steps 24 --budget 40

One real update flatters patches: the first patch pulls the content floor, but patches stack,
and when the slots are used (or the patches hold half the image's file bytes) a full plan
pulls every package layer that changed since the last full plan. This walks the synthetic
weekly series of ``run.py`` (``series.py``: 24 steps grown from the real "new" build, kernel
ABI bumps every 5th step) with pkgchunk's own planner and mtime policy, and scores per step:

* ``prev``: package layers, ``--prev`` (the planner with its previous plan, every step);
* ``patch``: ``--patch-layers K``: the first build planned at N - K layers; a step is a patch
  while a slot is free and the patches' file bytes stay within half the image's (pull: the
  compressed estimate of the changed entries and the directories above them, as
  ``plan/patch.py`` writes them); otherwise a full plan against the last full one (pull: its
  layers whose identity the client does not hold).

Both carry unchanged entries' mtimes along the chain (an entry equal but for its mtime keeps
the previous build's tar entry), as the CLI does. Reported: mean pull / floor, Docker's
classic store, and the mean and largest image size against ``prev``'s. Model, not real bytes:
per-file gzip estimates (``model.py``), and the planner's history is the last full plan's
(the CLI's patch builds also record their versions; the model's full plans see fewer builds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import model  # noqa: E402
import pkgchunk_strategy  # noqa: E402
import score  # noqa: E402
import series  # noqa: E402
from strategies import STRATEGIES  # noqa: E402

#: plan/patch.py's MAX_PATCH_SHARE
SHARE = 0.5


def carried_chain(builds: list[model.Build]) -> list[dict[str, bytes]]:
    """Entry identities as written along the chain: policy mtimes, carried when equal."""
    mode = pkgchunk_strategy.POLICY_MODE
    out = [score.entry_hashes(builds[0], mode)]
    for a, b in itertools.pairwise(builds):
        hb = score.entry_hashes(b, mode)
        hc = dict(hb)
        for p, r in b.files.items():
            o = a.files.get(p)
            if o is not None and (o.kind, o.mode, o.uid, o.gid, o.size, o.digest) == (
                r.kind, r.mode, r.uid, r.gid, r.size, r.digest
            ):
                hc[p] = out[-1][p]
        out.append(hc)
    return out


def raw_bytes(build: model.Build, paths: list[str]) -> int:
    return sum(build.files[p].size for p in paths if build.files[p].kind == "reg")


def walk(builds: list[model.Build], hashes: list[dict[str, bytes]], budget: int,
         slots: int) -> list[dict[str, Any]]:
    """Per step: pull, Docker pull, image bytes, and whether it was a patch."""
    strat = STRATEGIES["pkgchunk"]
    fill = budget - slots
    full_build = builds[0]
    full_plan = strat(full_build, fill, None)
    held = score.layers_of(full_build, full_plan, hashes[0], True)
    stack: list[score.Layer] = []  # the patches above ``held``, bottom first
    patch_bytes = 0
    out = []
    for k in range(1, len(builds)):
        b, h, hp = builds[k], hashes[k], hashes[k - 1]
        floor = score.floor_bytes(builds[k - 1], b)
        changed = [p for p in b.files if hp.get(p) != h[p]]
        delta = score.with_parents(b, changed) if changed else []
        written = raw_bytes(b, delta)
        image_raw = raw_bytes(b, list(b.files))
        if len(stack) < slots and patch_bytes + written <= SHARE * image_raw:
            csize = sum(b.files[p].csize for p in delta)
            stack.append(score.Layer(f"patch{k}".encode(), csize, len(delta)))
            patch_bytes += written
            pull = docker = csize
            kind = "patch"
        else:
            plan = strat(b, fill, (full_build, full_plan))
            layers = score.layers_of(b, plan, h, True)
            cost = score.update_cost(held + stack, layers, floor)
            pull, docker = int(cost["pulled"]), int(cost["pulled_docker"])
            full_build, full_plan, held, stack, patch_bytes = b, plan, layers, [], 0
            kind = "full"
        out.append({"step": k, "kind": kind, "floor": floor, "pulled": pull,
                    "pulled_docker": docker,
                    "image": sum(x.csize for x in held + stack)})
    return out


def plain(builds: list[model.Build], hashes: list[dict[str, bytes]],
          budget: int) -> list[dict[str, Any]]:
    plans = score.plan_chain(STRATEGIES["pkgchunk"], builds, budget)
    layers = [score.layers_of(b, p, h, True) for b, p, h in zip(builds, plans, hashes,
                                                               strict=True)]
    out = []
    for k in range(1, len(builds)):
        floor = score.floor_bytes(builds[k - 1], builds[k])
        cost = score.update_cost(layers[k - 1], layers[k], floor)
        out.append({"step": k, "floor": floor, "pulled": int(cost["pulled"]),
                    "pulled_docker": int(cost["pulled_docker"]), "image": int(cost["total"])})
    return out


def summary(
    steps: list[dict[str, Any]], base: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    fl = sum(s["floor"] for s in steps)
    got: dict[str, Any] = {
        "ratio": sum(s["pulled"] for s in steps) / fl,
        "ratio_docker": sum(s["pulled_docker"] for s in steps) / fl,
        "mean_step_ratio": statistics.mean(s["pulled"] / s["floor"] for s in steps),
        "worst_step_ratio": max(s["pulled"] / s["floor"] for s in steps),
    }
    if base is not None:
        sizes = [s["image"] / b["image"] for s, b in zip(steps, base, strict=True)]
        got["image_mean"] = statistics.mean(sizes)
        got["image_max"] = max(sizes)
        got["full_plans"] = sum(s["kind"] == "full" for s in steps)
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--budget", type=int, action="append", help="layer budgets (40 and 64)")
    ap.add_argument("--slots", type=int, default=4)
    a = ap.parse_args(argv)
    old, new = model.load_real(a.work)
    pkgchunk_strategy.register_root(new, a.work / "debian-new.rootfs")
    pkgchunk_strategy.register_reference(new)
    pkgchunk_strategy.start_chain(new)
    rates, _ = series.calibrate(old, new)
    builds = [new, *series.generate(new, a.steps, rates)]
    hashes = carried_chain(builds)
    doc: dict[str, Any] = {"steps": a.steps, "slots": a.slots, "budgets": {}}
    lines = [f"| layers | `--prev` x floor | `--prev` Docker x | `--patch-layers {a.slots}` x"
             " floor | patch Docker x | worst step, patch | full plans | image vs `--prev`:"
             " mean, largest |", "|---|---|---|---|---|---|---|---|"]
    for budget in a.budget or [40, 64]:
        base = plain(builds, hashes, budget)
        patched = walk(builds, hashes, budget, a.slots)
        sb, sp = summary(base), summary(patched, base)
        doc["budgets"][str(budget)] = {"prev": {"steps": base, **sb},
                                       "patch": {"steps": patched, **sp}}
        lines.append(
            f"| {budget} | {sb['ratio']:.3f} | {sb['ratio_docker']:.2f} | {sp['ratio']:.3f} | "
            f"{sp['ratio_docker']:.2f} | {sp['worst_step_ratio']:.2f} | {sp['full_plans']} of"
            f" {a.steps} | {sp['image_mean']:.2f}x, {sp['image_max']:.2f}x |"
        )
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "patchseries.json").write_text(json.dumps(doc, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
