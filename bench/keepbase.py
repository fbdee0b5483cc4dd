#!/usr/bin/env python3
"""What a host already holding the base pulls for a derived image, with and without --keep-base.

    python3 bench/keepbase.py [--work bench/work] [--out bench/out]

The corpus (``bench/corpus.py``) is exactly a derived image: ``debian-{old,new}`` are an
``mmdebstrap --variant=apt`` base (layer 1) plus the layer ``apt-get install`` of a server
package set wrote above it (layer 2), at two Debian archive states (old -> new updates
packages of the base and of the derived part alike). Both are rechunked twice with the real
CLI, the second build stable against the first (``--prev``)::

    pkgchunk rechunk oci:WORK/debian-old:latest oci:OUT/keepbase/MODE:old [--keep-base 1]
    pkgchunk rechunk oci:WORK/debian-new:latest oci:OUT/keepbase/MODE:new [--keep-base 1] \\
        --prev oci:OUT/keepbase/MODE:old
    pkgchunk diff oci:OUT/keepbase/MODE:old oci:OUT/keepbase/MODE:new --json

and the bytes pulled are counted from the manifests (a client fetches each layer blob whose
digest it does not hold):

* ``cold``: a host holding only the base (debian-new's layer 1, as ``FROM debian`` left it)
  pulls the derived image ``new``;
* ``update``: a host holding ``old`` (and so its base) pulls ``new`` (``diff``'s pull_bytes);
* ``update, new base held``: the same host already holds the new base's layer (pulled for
  the new base itself or for a sibling built ``FROM`` it).

MODE ``input`` is the unchunked input itself, ``whole`` the default rechunk, ``keep-base`` the
rechunk with ``--keep-base 1``. Writes ``OUT/keepbase.json`` and prints a markdown table.
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

import realupdate  # noqa: E402

MB = 1e6


def log(msg: str) -> None:
    print(f"[keepbase {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(args: list[str]) -> tuple[str, float]:
    log("pkgchunk " + " ".join(args))
    res, took = realupdate.run(args)
    return res.stdout, took


def layers(layout: Path, tag: str) -> list[tuple[str, int]]:
    """(digest, size) of each layer of the image at ``tag``."""
    return [(d["digest"], d["size"]) for d in realupdate.manifest(layout, tag)["layers"]]


def pull(image: list[tuple[str, int]], held: set[str]) -> int:
    return sum(size for digest, size in dict(image).items() if digest not in held)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--reuse", action="store_true",
                    help="count the images a previous run wrote instead of writing them again")
    a = ap.parse_args(argv)
    work, out = a.work.resolve(), a.out.resolve()
    scratch = out / "keepbase"
    scratch.mkdir(parents=True, exist_ok=True)
    src = {s: f"oci:{work}/debian-{s}:latest" for s in ("old", "new")}
    inputs = {s: layers(work / f"debian-{s}", "latest") for s in ("old", "new")}
    base_new = {inputs["new"][0][0]}
    rows: dict[str, dict[str, Any]] = {
        "input": {
            "layers": len(inputs["new"]),
            "total_bytes": sum(s for _, s in inputs["new"]),
            "cold_pull_bytes": pull(inputs["new"], base_new),
            "update_pull_bytes": pull(inputs["new"], {d for d, _ in inputs["old"]}),
            "update_base_held_pull_bytes": pull(
                inputs["new"], {d for d, _ in inputs["old"]} | base_new
            ),
        }
    }
    for mode, extra in (("whole", []), ("keep-base", ["--keep-base", "1"])):
        layout = scratch / mode
        ref = f"oci:{layout}"
        t_old = t_new = None
        if not (a.reuse and (layout / "index.json").exists()):
            shutil.rmtree(layout, ignore_errors=True)
            t_old = round(run(["rechunk", src["old"], f"{ref}:old", *extra, "--json"])[1], 1)
            t_new = round(run(["rechunk", src["new"], f"{ref}:new", *extra,
                               "--prev", f"{ref}:old", "--json"])[1], 1)
        diff = json.loads(run(["diff", f"{ref}:old", f"{ref}:new", "--json"])[0])
        new = layers(layout, "new")
        rows[mode] = {
            "layers": len(new),
            "total_bytes": sum(s for _, s in new),
            "cold_pull_bytes": pull(new, base_new),
            "update_pull_bytes": diff["pull_bytes"],
            "update_base_held_pull_bytes": pull(new, {d for d, _ in layers(layout, "old")}
                                                | base_new),
            "seconds": [t_old, t_new],
        }
        log(f"{mode}: {rows[mode]}")
    doc = {"work": str(work), "rows": rows}
    (out / "keepbase.json").write_text(json.dumps(doc, indent=2) + "\n")
    print("| image | layers | total | cold pull, base held | update old -> new"
          " | update, new base held |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['layers']} | {r['total_bytes'] / MB:.1f} MB"
              f" | {r['cold_pull_bytes'] / MB:.1f} MB | {r['update_pull_bytes'] / MB:.1f} MB"
              f" | {r['update_base_held_pull_bytes'] / MB:.1f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
