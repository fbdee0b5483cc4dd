#!/usr/bin/env python3
"""Patch layers on the real Debian update pairs: what a client pulls, in real bytes.

    python3 bench/patchupdate.py --pair all            # every pair, 40 and 64 layers
    python3 bench/patchupdate.py --pair trixie-vm --budget 40

For each pair (``bench/corpus.py``) and layer budget N, exactly what a user runs::

    pkgchunk rechunk oci:WORK/debian-old:latest oci:OUT:old --max-layers N
    pkgchunk rechunk oci:WORK/debian-new:latest oci:OUT:new --max-layers N --prev oci:OUT:old
    pkgchunk rechunk oci:WORK/debian-old:latest oci:OUT:pold --max-layers N --patch-layers K
    pkgchunk rechunk oci:WORK/debian-new:latest oci:OUT:pnew --max-layers N --patch-layers K \\
        --prev oci:OUT:pold
    pkgchunk diff oci:OUT:old oci:OUT:new --json        # and pold -> pnew
    pkgchunk verify oci:WORK/debian-new:latest oci:OUT:pnew   # (and new): must be identical

The floor is ``bench/realupdate.py``'s (``tar | gzip -6`` of the content-changed and new
files), measured again here. ``pkgchunk --prev`` is measured again in the same run, so the two
rows compare on the same code and machine. The other strategies are not written here: their
figures are ``bench/realupdate.py``'s (their layering does not depend on this change), quoted
from ``out/realupdate-PAIR.json`` with the commit that wrote them.

Writes ``out/patchupdate-PAIR.json`` and prints one table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402
import model  # noqa: E402
import realupdate  # noqa: E402

MB = 1e6
SLOTS = 4


def measure(work: Path, layout: Path, budget: int, slots: int) -> dict[str, Any]:
    """old, new --prev, (with slots: patch builds), diff, verify: one strategy at one budget."""
    shutil.rmtree(layout, ignore_errors=True)
    ref = f"oci:{layout}"
    extra = ["--max-layers", str(budget)] + (["--patch-layers", str(slots)] if slots else [])
    src_old, src_new = f"oci:{work}/debian-old:latest", f"oci:{work}/debian-new:latest"
    step = realupdate.Steps()

    step("rechunk_old", ["rechunk", src_old, f"{ref}:old", *extra])
    new = step("rechunk_new", ["rechunk", src_new, f"{ref}:new", *extra, "--prev", f"{ref}:old"])
    d = json.loads(step("diff", ["diff", f"{ref}:old", f"{ref}:new", "--json"]).stdout)
    v = step("verify", ["verify", src_new, f"{ref}:new"], check=False)
    return {
        "commands": step.commands, "seconds": step.seconds,
        "layers_old": len(realupdate.manifest(layout, "old")["layers"]),
        "layers_new": len(d["layers"]),
        "pull_bytes": d["pull_bytes"], "total_bytes": d["total_bytes"],
        "docker_prefix_pull_bytes": d["docker_prefix_pull_bytes"],
        "pulled_layers": [la["name"] for la in d["layers"] if la["pulled"]],
        "note": [ln for ln in new.stderr.splitlines() if "patch layer" in ln],
        "verify": {"exit": v.returncode, "output": v.stdout.strip().splitlines()[:3]},
    }


def others(out: Path, pair: str, budget: int) -> dict[str, Any]:
    """chunkah and apko-origin from bench/realupdate.py's last run on this pair, if any."""
    path = out / f"realupdate-{pair}.json"
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    got: dict[str, Any] = {"git": doc["machine"].get("main", doc["machine"].get("git"))}
    real = doc["pkgchunk"].get(str(budget), {}).get("others", {})
    mod = doc["modelled"]["budgets"].get(str(budget), {})
    for name in ("chunkah", "apko-origin"):
        if name in real:
            got[name] = (real[name]["ratio"], "real")
        elif name in mod:
            got[name] = (mod[name]["policy"]["ratio"], "modelled")
    return got


def one_pair(pair: str, work: Path, out: Path, budgets: list[int]) -> dict[str, Any]:
    scratch = out / "patchupdate" / pair
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    old, new = model.load_real(work)
    changed = realupdate.changed_paths(old, new)
    floor = realupdate.tar_gzip_bytes(work / "debian-new.rootfs", changed, scratch)
    doc: dict[str, Any] = {"pair": pair, "machine": realupdate.machine(),
                           "floor": {"bytes": floor, "files": len(changed)}, "budgets": {}}
    for budget in budgets:
        row = {
            "prev": measure(work, scratch / f"prev-{budget}", budget, 0),
            "patch": measure(work, scratch / f"patch-{budget}", budget, SLOTS),
            "others": others(out, pair, budget),
        }
        for key in ("prev", "patch"):
            r = row[key]
            r["ratio"] = r["pull_bytes"] / floor
            r["ratio_docker"] = r["docker_prefix_pull_bytes"] / floor
            r["total_over_prev"] = r["total_bytes"] / row["prev"]["total_bytes"]
        doc["budgets"][str(budget)] = row
    doc["seconds"] = round(time.time() - t0, 1)
    (out / f"patchupdate-{pair}.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def table(docs: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | layers | floor MB | `--prev` x floor | `--prev` Docker x | "
        f"`--patch-layers {SLOTS}` x floor | patch Docker x | image size vs `--prev` | "
        "chunkah x | apko-origin x | verify |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in docs:
        fl = d["floor"]["bytes"]
        for budget, row in d["budgets"].items():
            p, q, o = row["prev"], row["patch"], row["others"]

            def other(name: str, o: dict[str, Any] = o) -> str:
                if name not in o:
                    return "–"
                v, how = o[name]
                return f"{v:.3f}" + (" m" if how == "modelled" else "")

            ok = "identical" if all(r["verify"]["exit"] == 0 for r in (p, q)) else "FAILED"
            lines.append(
                f"| {d['pair']} | {budget} | {fl / MB:.1f} | {p['ratio']:.3f} | "
                f"{p['ratio_docker']:.2f} | {q['ratio']:.3f} | {q['ratio_docker']:.2f} | "
                f"{q['total_over_prev']:.2f}x | {other('chunkah')} | {other('apko-origin')} |"
                f" {ok} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--pair", default=corpus.DEFAULT_PAIR, choices=[*corpus.PAIRS, "all"])
    ap.add_argument("--budget", type=int, action="append", help="layer budgets (40 and 64)")
    ap.add_argument("--summary", action="store_true",
                    help="only print the table from out/patchupdate-*.json")
    a = ap.parse_args(argv)
    out = a.out.resolve()
    if a.summary:
        docs = [json.loads(f.read_text()) for f in sorted(out.glob("patchupdate-*.json"))]
        print(table(docs))
        return 0
    pairs = list(corpus.PAIRS) if a.pair == "all" else [a.pair]
    docs = []
    for pair in pairs:
        work = corpus.pair_dir(a.work.resolve(), pair)
        if not (work / "debian-new" / "index.json").exists():
            realupdate.log(f"{pair}: no corpus in {work}: run bench/corpus.py --pair {pair}")
            return 2
        docs.append(one_pair(pair, work, out, a.budget or [40, 64]))
        print(table(docs[-1:]), flush=True)
    print(table(docs))
    failed = any(r["verify"]["exit"] for d in docs for row in d["budgets"].values()
                 for r in (row["prev"], row["patch"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
