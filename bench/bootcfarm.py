#!/usr/bin/env python3
"""The issue-14 scenario: a real Debian 12 root given a real ostree hardlink farm.

    python3 bench/bootcfarm.py            # ~15 min; needs bench/work from corpus.py, ostree, root

For debian-old and debian-new (bench/corpus.py) it builds two one-layer images of the same
root: "plain" (the root plus the /sysroot dir and /ostree link every bootc root has) and
"farm" (that root after ``ostree commit`` of /usr into /sysroot/ostree/repo and ``ostree
checkout -H``, with containers.bootc, ostree.bootable, ostree.commit, ostree.final-diffid),
made by tests/bootcbuild.py. Then, with the real CLI:

* ``plan`` of old: plain, farm (default: farm left out), farm --keep-sysroot (what pkgchunk
  did before issue 14: nothing is left out or split);
* the update old -> new (``rechunk`` old, ``rechunk`` new ``--prev`` old, ``diff --json``)
  for the same three;
* ``verify`` farm-new against its default output.

Writes bench/out/bootcfarm.json and prints a markdown summary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import bootcbuild  # noqa: E402

WORK = REPO / "bench" / "work"
OUT = REPO / "bench" / "out"
MIB = 1 << 20


def log(msg: str) -> None:
    print(f"[bootcfarm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cli(*args: str, check: bool = True) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SOURCE_DATE_EPOCH", None)
    t = time.time()
    res = subprocess.run([sys.executable, "-m", "pkgchunk.cli", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise SystemExit(f"pkgchunk {' '.join(args)}: exit {res.returncode}\n{res.stderr}")
    return res, time.time() - t


def build(work: Path) -> dict[str, str]:
    refs: dict[str, str] = {}
    for state in ("old", "new"):
        src = WORK / f"debian-{state}.rootfs"
        if not src.is_dir():
            raise SystemExit(f"{src} missing: run bench/corpus.py first")
        plain = work / f"plain-{state}"
        if not plain.exists():
            tmp = work / f"plain-{state}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            bootcbuild.copy_root(src, tmp)
            (tmp / "sysroot").mkdir(exist_ok=True)
            if not (tmp / "ostree").is_symlink():
                (tmp / "ostree").symlink_to("sysroot/ostree")
            tmp.rename(plain)
        farm = work / f"farm-{state}"
        commit_file = work / f"farm-{state}.commit"
        if not commit_file.exists():
            shutil.rmtree(farm, ignore_errors=True)
            bootcbuild.copy_root(plain, farm)
            t = time.time()
            commit_file.write_text(bootcbuild.ostree_farm(farm))
            log(f"{state}: ostree commit + checkout -H in {time.time() - t:.0f} s")
        stamp = work / f"farm-{state}.mtimes0"
        if not stamp.exists():  # roots farmed before ostree_farm zeroed symlink mtimes
            bootcbuild.zero_mtimes(farm / "usr")
            (work / f".farm-{state}.packed").unlink(missing_ok=True)
            stamp.touch()
        for kind, root in (("plain", plain), ("farm", farm)):
            layout = work / "images"
            tag = f"{kind}-{state}"
            marker = work / f".{tag}.packed"
            if not marker.exists():
                t = time.time()
                bootcbuild.pack_root(root, layout, tag, bootc=kind == "farm",
                                     commit=commit_file.read_text() if kind == "farm" else None,
                                     level=1)
                marker.touch()
                log(f"packed {tag} in {time.time() - t:.0f} s")
            refs[tag] = f"oci:{layout}:{tag}"
    return refs


def plan_summary(doc: dict[str, Any]) -> dict[str, Any]:
    layers = doc["layers"]
    total = sum(la["bytes"] for la in layers)
    big = max(layers, key=lambda la: la["bytes"])
    return {
        "layers": len(layers), "bytes": total,
        "largest": {"name": big["name"], "bytes": big["bytes"], "groups": len(big["groups"]),
                    "packages": len(big["packages"]),
                    "change_probability": big["change_probability"]},
        "groups": [[la["name"], la["groups"]] for la in layers],
    }


def main() -> int:
    work = WORK / "bootc"
    work.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    refs = build(work)
    out = work / "out"
    doc: dict[str, Any] = {"plan": {}, "update": {}}
    cases = {"plain": ("plain", ()), "farm": ("farm", ()),
             "farm-keep-sysroot": ("farm", ("--keep-sysroot",))}
    for name, (kind, extra) in cases.items():
        res, took = cli("plan", refs[f"{kind}-old"], "--json", *extra)
        doc["plan"][name] = {**plan_summary(json.loads(res.stdout)), "seconds": round(took, 1),
                             "stderr": res.stderr.strip().splitlines()}
        log(f"plan {name}: {doc['plan'][name]['layers']} layers in {took:.0f} s")
    for name, (kind, extra) in cases.items():
        a, b = f"oci:{out}:{name}-old", f"oci:{out}:{name}-new"
        _, t1 = cli("rechunk", refs[f"{kind}-old"], a, *extra)
        _, t2 = cli("rechunk", refs[f"{kind}-new"], b, "--prev", a, *extra)
        res, _ = cli("diff", a, b, "--json")
        d = json.loads(res.stdout)
        doc["update"][name] = {"pull_bytes": d["pull_bytes"], "total_bytes": d["total_bytes"],
                               "docker_prefix_pull_bytes": d["docker_prefix_pull_bytes"],
                               "layers": len(d["layers"]),
                               "rechunk_seconds": [round(t1, 1), round(t2, 1)]}
        log(f"update {name}: pull {d['pull_bytes'] / MIB:.1f} MiB of {d['total_bytes'] / MIB:.1f}")
    res, took = cli("verify", refs["farm-new"], f"oci:{out}:farm-new", check=False)
    doc["verify"] = {"exit": res.returncode, "stdout": res.stdout.strip().splitlines()[:5],
                     "seconds": round(took, 1)}
    same = doc["plan"]["plain"]["groups"] == doc["plan"]["farm"]["groups"]
    doc["plan_same_groups_plain_vs_farm"] = same
    (OUT / "bootcfarm.json").write_text(json.dumps(doc, indent=1))
    print(summary(doc))
    return 0


def summary(doc: dict[str, Any]) -> str:
    rows = ["| image | layers | largest layer | its P(change) | update pulls | of |",
            "|---|---|---|---|---|---|"]
    for name in ("plain", "farm", "farm-keep-sysroot"):
        p, u = doc["plan"][name], doc["update"][name]
        rows.append(
            f"| {name} | {p['layers']} | {p['largest']['name']} {p['largest']['bytes'] / MIB:.0f}"
            f" MiB ({p['largest']['packages']} pkgs) | {p['largest']['change_probability']:.2f} |"
            f" {u['pull_bytes'] / MIB:.1f} MiB | {u['total_bytes'] / MIB:.1f} MiB |")
    rows.append("")
    same = doc["plan_same_groups_plain_vs_farm"]
    rows.append(f"plan groups plain == farm, layer for layer: {same}")
    rows.append(f"verify farm-new -> output: exit {doc['verify']['exit']}: "
                + " / ".join(doc["verify"]["stdout"][:2]))
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
