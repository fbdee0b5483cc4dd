#!/usr/bin/env python3
"""Carrying unchanged entries forward, on the real update: pull and cost with and without it.

    python3 bench/carry.py             # ~10 min on 2 cores; needs the corpus (bench/corpus.py)

For each layer budget (40 and 64), exactly what a user runs::

    pkgchunk rechunk oci:bench/work/debian-old:latest oci:OUT:old --max-layers N
    pkgchunk rechunk -v oci:bench/work/debian-new:latest oci:OUT:carry --max-layers N \
        --prev oci:OUT:old
    pkgchunk rechunk oci:bench/work/debian-new:latest oci:OUT:plain --max-layers N \
        --prev oci:OUT:old --no-carry
    pkgchunk diff oci:OUT:old oci:OUT:carry --json          # and oci:OUT:plain
    pkgchunk verify oci:bench/work/debian-new:latest oci:OUT:carry   # and plain: must be identical

Floors (``tar | gzip -6`` of the new rootfs, as ``bench/realupdate.py`` measures them): the
content floor (files new or changed in content), the floor with metadata under the clamp
policy alone (``realupdate.metadata_changed_paths``), and the floor with metadata under carry:
every entry of OUT:carry whose type, mode, owner, size, content, link target or mtime differs
from OUT:old's, read from the written images themselves.
The carrying step's own cost (layers read, bytes, files hashed, seconds) is taken from the
``-v`` log line of the carrying build; its wall time is compared with the ``--no-carry`` build.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import model  # noqa: E402
import pkgchunk_strategy  # noqa: E402
import realupdate  # noqa: E402

from pkgchunk import ContentHasher, open_image  # noqa: E402

MB = 1e6
_LOG = re.compile(r"carried (\d+) entries forward from .*: read (\d+) of (\d+) layers "
                  r"\((\d+) bytes\), hashed (\d+) files, ([\d.]+) s")


def changed_entries(old_ref: str, new_ref: str) -> list[str]:
    """Paths of ``new_ref`` whose tar entry or content differs from ``old_ref``'s."""
    with open_image(old_ref) as a, open_image(new_ref) as b:
        ha, hb = ContentHasher(a.tree), ContentHasher(b.tree)
        out = []
        for path, e in b.tree.entries.items():
            o = a.tree.entries.get(path)
            key_b = (e.kind, e.mode, e.uid, e.gid, e.size, e.target, e.mtime, e.xattrs)
            same = o is not None and key_b == (
                o.kind, o.mode, o.uid, o.gid, o.size, o.target, o.mtime, o.xattrs)
            if not same or (e.kind == "reg" and e.data is not None and o is not None
                            and o.data is not None and ha.digest(o) != hb.digest(e)):
                out.append(path)
        return sorted(out)


def one_budget(budget: int, work: Path, out: Path) -> dict[str, Any]:
    layout = out / f"carry-{budget}"
    shutil.rmtree(layout, ignore_errors=True)
    ref = f"oci:{layout}"
    n = ["--max-layers", str(budget)]
    src_old, src_new = f"oci:{work}/debian-old:latest", f"oci:{work}/debian-new:latest"
    step = realupdate.Steps(f"{budget}: ")

    step("rechunk_old", ["rechunk", src_old, f"{ref}:old", *n])
    carry = step("rechunk_carry", ["rechunk", "-v", src_new, f"{ref}:carry", *n,
                                   "--prev", f"{ref}:old"])
    step("rechunk_plain", ["rechunk", src_new, f"{ref}:plain", *n, "--prev", f"{ref}:old",
                           "--no-carry"])
    got = _LOG.search(carry.stderr)
    cost = None
    if got:
        c, r, t, b, h, s = got.groups()
        cost = {"carried_entries": int(c), "layers_read": int(r), "layers_total": int(t),
                "compressed_bytes_read": int(b), "files_hashed": int(h), "seconds": float(s)}
    res: dict[str, Any] = {"commands": step.commands, "seconds": step.seconds,
                           "carry_cost": cost}
    for tag in ("carry", "plain"):
        d = json.loads(step(f"diff_{tag}", ["diff", f"{ref}:old", f"{ref}:{tag}", "--json"]).stdout)
        v = step(f"verify_{tag}", ["verify", src_new, f"{ref}:{tag}"], check=False)
        res[tag] = {"pull_bytes": d["pull_bytes"], "total_bytes": d["total_bytes"],
                    "docker_prefix_pull_bytes": d["docker_prefix_pull_bytes"],
                    "layers": len(d["layers"]), "verify_exit": v.returncode,
                    "verify": v.stdout.strip().splitlines()[:5]}
    res["changed_entries_carry"] = changed_entries(f"{ref}:old", f"{ref}:carry")
    shutil.rmtree(layout, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--budget", type=int, action="append", help="layer budgets (40 and 64)")
    a = ap.parse_args(argv)
    work, out = a.work.resolve(), a.out.resolve()
    scratch = out / "carry"
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    old, new = model.load_real(work)
    pkgchunk_strategy.register_root(old, work / "debian-old.rootfs")
    pkgchunk_strategy.register_root(new, work / "debian-new.rootfs")
    pkgchunk_strategy.start_chain(old)
    root = work / "debian-new.rootfs"
    changed = realupdate.changed_paths(old, new)
    meta = realupdate.metadata_changed_paths(old, new)
    floor = realupdate.tar_gzip_bytes(root, changed, scratch)
    floor_meta = realupdate.tar_gzip_bytes(root, meta, scratch)
    doc: dict[str, Any] = {
        "machine": realupdate.machine(),
        "floor": {"bytes": floor, "files": len(changed)},
        "floor_with_metadata_clamp": {"bytes": floor_meta, "entries": len(meta)},
        "budgets": {},
    }
    for budget in a.budget or [40, 64]:
        r = one_budget(budget, work, scratch)
        paths = r.pop("changed_entries_carry")
        r["floor_with_metadata_carry"] = {
            "bytes": realupdate.tar_gzip_bytes(root, paths, scratch), "entries": len(paths)}
        for tag in ("carry", "plain"):
            r[tag]["ratio"] = r[tag]["pull_bytes"] / floor
        doc["budgets"][str(budget)] = r
        realupdate.log(f"{budget}: carry {r['carry']['pull_bytes'] / MB:.1f} MB "
                       f"({r['carry']['ratio']:.3f}x), no carry {r['plain']['pull_bytes'] / MB:.1f}"
                       f" MB ({r['plain']['ratio']:.3f}x)")
    doc["seconds"] = round(time.time() - t0, 1)
    (out / "carry.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(summary(doc))
    ok = all(r[t]["verify_exit"] == 0 for r in doc["budgets"].values() for t in ("carry", "plain"))
    return 0 if ok else 1


def summary(doc: dict[str, Any]) -> str:
    floor = doc["floor"]["bytes"]
    fm = doc["floor_with_metadata_clamp"]["bytes"]
    lines = [
        f"content floor {floor / MB:.1f} MB; with metadata, clamp alone {fm / MB:.1f} MB "
        f"({fm / floor:.2f}x)",
        "| budget | pull, clamp alone | pull, carry | floor with metadata, carry |"
        " Docker prefix, clamp / carry | carry cost |",
        "|---|---|---|---|---|---|",
    ]
    for budget, r in doc["budgets"].items():
        p, c, f = r["plain"], r["carry"], r["floor_with_metadata_carry"]["bytes"]
        cost = r["carry_cost"] or {}
        lines.append(
            f"| {budget} | {p['pull_bytes'] / MB:.1f} MB = {p['ratio']:.3f}x |"
            f" {c['pull_bytes'] / MB:.1f} MB = {c['ratio']:.3f}x | {f / MB:.1f} MB ="
            f" {f / floor:.2f}x | {p['docker_prefix_pull_bytes'] / MB:.1f} /"
            f" {c['docker_prefix_pull_bytes'] / MB:.1f} MB | read {cost.get('layers_read')}"
            f" of {cost.get('layers_total')} layers"
            f" ({(cost.get('compressed_bytes_read') or 0) / MB:.1f} MB), hashed"
            f" {cost.get('files_hashed')} files, {cost.get('seconds')} s;"
            f" build {r['seconds']['rechunk_carry']} s vs {r['seconds']['rechunk_plain']} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
