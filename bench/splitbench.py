#!/usr/bin/env python3
"""Splitting big packages by file behaviour (pkgchunk/plan/split.py), before and after, on real
update pairs: pkgchunk with ``split_threshold: 4M`` against the same planner with the shipped
``split_threshold: 0`` (every package whole), next to apko-origin and chunkah.

    python3 bench/splitbench.py --work bench/work [--work bench/work/pairs/bookworm-server]

Each ``--work`` is a corpus directory as ``corpus.py`` writes it (``debian-{old,new}``,
their ``.rootfs``, ``.base``, ``.sde``, ``update.json``). Scored with the ``pkgchunk-policy``
mtimes (what pkgchunk writes today) and with ``pkgchunk-carry``: the same, except that a path
whose type, mode, owner, size and content equal the previous build's keeps the previous
build's (older) mtime, the policy of issue 11's "carry unchanged entries forward". Splitting
can only pay where an upgraded package's unchanged files keep their tar headers, so the
second mode is where it shows. Writes ``--out``/splitbench.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import model  # noqa: E402
import pkgchunk_strategy as ps  # noqa: E402  (registers pkgchunk and the pkgchunk-policy mode)
import score  # noqa: E402
from model import Build  # noqa: E402
from strategies import STRATEGIES, Plan, Prev, Strategy  # noqa: E402

from pkgchunk import plan_layers  # noqa: E402

CARRY = "pkgchunk-carry"
#: The chain being scored, in order (carry looks one build back).
_CHAIN: list[Build] = []


def log(msg: str) -> None:
    print(f"[split {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def carry_mtimes(build: Build) -> Mapping[str, int]:
    """pkgchunk's policy mtimes, with unchanged entries' mtimes carried from the build before."""
    now = ps.policy_mtimes(build)
    i = next((k for k, b in enumerate(_CHAIN) if b is build), -1)
    if i <= 0:
        return now
    prev = _CHAIN[i - 1]
    before = carry_mtimes(prev)
    out = dict(now)
    for p, r in build.files.items():
        o = prev.files.get(p)
        if o is not None and (o.kind, o.mode, o.uid, o.gid, o.size, o.digest) == (
            r.kind, r.mode, r.uid, r.gid, r.size, r.digest
        ):
            out[p] = min(now[p], before[p])
    return out


def pkgchunk_with(threshold: int | None, fresh: bool = False) -> Strategy:
    """pkgchunk's strategy (as ``pkgchunk_strategy.make_strategy``) with a split threshold."""
    labels: dict[tuple[int, int], tuple[Build, str]] = {}

    def run(build: Build, budget: int, prev: Prev | None) -> Plan:
        v = ps.view(build)
        rules = ps._rules(v.rules)
        if threshold is not None:
            rules = dataclasses.replace(rules, split_threshold=threshold)
        previous = None
        if prev is not None:
            held = labels.get((id(prev[0]), budget))
            if held is not None and held[0] is prev[0]:
                previous = ps.record_of(held[1]).plan
        out = plan_layers(v.tree, v.ownership, rules, previous, max_layers=budget, fresh=fresh,
                          derived="follow")
        labels[(id(build), budget)] = (build, out.label)
        if prev is not None and budget == max(BUDGETS):
            log(f"  {len(out.splits)} groups split: "
                + ", ".join(s.group for s in out.splits)[:300])
        return [list(layer.paths) for layer in out.plan.layers]

    return run


BUDGETS = [64, 40]
#: The threshold measured (the shipped rules say 0: nothing is split).
SPLIT = 4 << 20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, action="append", required=True)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    args = ap.parse_args(argv)
    score.EXTERNAL_MTIMES[CARRY] = carry_mtimes
    score.WITH_PARENTS.add(CARRY)
    strategies: dict[str, Strategy] = {
        "apko-origin": STRATEGIES["apko-origin"],
        "chunkah": STRATEGIES["chunkah"],
        "pkgchunk, whole packages": pkgchunk_with(0),
        "pkgchunk, split at 4M": pkgchunk_with(SPLIT),
        "pkgchunk --fresh, whole": pkgchunk_with(0, fresh=True),
        "pkgchunk --fresh, split at 4M": pkgchunk_with(SPLIT, fresh=True),
    }
    doc: dict[str, object] = {}
    md: list[str] = []
    for work in args.work:
        old, new = model.load_real(work)
        ps.register_root(old, work / "debian-old.rootfs")
        ps.register_root(new, work / "debian-new.rootfs")
        ps.start_chain(old)
        _CHAIN[:] = [old, new]
        log(f"{work}: {len(old.packages)} -> {len(new.packages)} packages")
        res = score.score_chain(strategies, [old, new], BUDGETS, log)
        doc[str(work)] = res
        for mode in (ps.POLICY_MODE, CARRY):
            md.append(score.table(res, f"{work.name or work}", mode))
        ps.forget([old, new])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "splitbench.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
    (args.out / "splitbench.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
