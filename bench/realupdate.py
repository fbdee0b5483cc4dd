#!/usr/bin/env python3
"""The real Debian update end to end with the real CLI: what a client pulls, in real bytes.

    python3 bench/realupdate.py            # ~6 min on 2 cores; writes bench/out/realupdate.json

For each layer budget (64 and 40), exactly what a user runs::

    pkgchunk rechunk oci:bench/work/debian-old:latest oci:OUT:old --max-layers N
    pkgchunk rechunk oci:bench/work/debian-new:latest oci:OUT:new --max-layers N --prev oci:OUT:old
    pkgchunk rechunk oci:bench/work/debian-new:latest oci:OUT:fresh --max-layers N --fresh
    pkgchunk diff oci:OUT:old oci:OUT:new --json        # pull_bytes: real compressed blob bytes
    pkgchunk verify oci:bench/work/debian-old:latest oci:OUT:old   # and new: must be identical

(``--fresh`` plans the new build without the previous layout: pkgchunk without ``--prev``.)
Measured in the same run:

* ``floor``: ``tar`` (GNU tar, sorted, no parents) of only the files whose content changed or
  that are new between ``debian-old.rootfs`` and ``debian-new.rootfs`` (regular files by
  sha256, symlinks by target, devices by number), piped into ``gzip -6``: the same definition
  the harness uses for every strategy (``score.floor_bytes``), measured for real;
* ``floor_with_metadata`` (for information): the same for every entry whose tar header
  changes too under pkgchunk's mtime policy (an upgraded package's unchanged files get the new
  package's mtimes): the least any package-aware layering can pull with that policy;
* ``as built``: the corpus images' own layers, pull = the new image's blobs the old lacks;
* per pulled layer of pkgchunk's output: its blob bytes, and how many of its files changed
  (content) or only their metadata, with the harness's per-file gzip estimates for the split;
* every other bounded strategy of ``bench/strategies.py`` written for real at the same budget
  (``--strategies``; ``none`` skips them): its plans for both builds written by pkgchunk's
  writer from the same trees (pkgchunk's mtime policy, parent directories in every layer,
  gzip -6), the pull measured by ``pkgchunk.diff``: only the layering differs from pkgchunk's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import model  # noqa: E402
import pkgchunk_strategy  # noqa: E402
import score  # noqa: E402
from strategies import STRATEGIES  # noqa: E402

from pkgchunk.diff import diff as pull_of  # noqa: E402
from pkgchunk.image import LayerSpec  # noqa: E402
from pkgchunk.oci.rootfs import minimal_config  # noqa: E402
from pkgchunk.oci.write import WriteOptions, write_image  # noqa: E402
from pkgchunk.plan.record import MTIME_LABEL, MtimeRecord  # noqa: E402
from pkgchunk.previous import open_previous  # noqa: E402
from pkgchunk.tree import encode_path  # noqa: E402

#: Strategies written for real by default: every bounded one (pkgchunk runs through its CLI).
OTHERS = ("apko-origin", "chunkah", "ostree-ext", "ostree-ext-fresh", "nix-popularity")

MB = 1e6


def log(msg: str) -> None:
    print(f"[realupdate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cli() -> list[str]:
    """How to run the pkgchunk CLI: the installed script, else this checkout's module."""
    exe = shutil.which("pkgchunk")
    return [exe] if exe else [sys.executable, "-m", "pkgchunk.cli"]


def run(args: list[str], check: bool = True) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("SOURCE_DATE_EPOCH", None)  # the commands as documented: no epoch
    t = time.time()
    res = subprocess.run([*cli(), *args], cwd=REPO, env=env, capture_output=True, text=True)
    took = time.time() - t
    if check and res.returncode != 0:
        raise SystemExit(f"pkgchunk {' '.join(args)}: exit {res.returncode}\n{res.stderr}")
    return res, took


def manifest(layout: Path, tag: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            doc: dict[str, Any] = json.loads(
                (layout / "blobs/sha256" / m["digest"][7:]).read_text()
            )
            return doc
    raise SystemExit(f"{layout}: no tag {tag}")


def as_built(work: Path) -> dict[str, Any]:
    old = manifest(work / "debian-old", "latest")["layers"]
    new = manifest(work / "debian-new", "latest")["layers"]
    assert isinstance(old, list) and isinstance(new, list)
    have = {x["digest"] for x in old}
    return {
        "layers": len(new),
        "pull_bytes": sum(x["size"] for x in new if x["digest"] not in have),
        "total_bytes": sum(x["size"] for x in new),
    }


# ---------------------------------------------------------------- floors


def _entry_key(r: model.FileRec) -> tuple[object, ...]:
    return (r.kind, r.digest)


def changed_paths(old: model.Build, new: model.Build) -> list[str]:
    """New paths and paths whose type or content changed (score.floor_bytes' definition)."""
    return sorted(
        p for p, r in new.files.items()
        if (o := old.files.get(p)) is None or _entry_key(o) != _entry_key(r)
    )


def metadata_changed_paths(old: model.Build, new: model.Build) -> list[str]:
    """Entries whose tar header or content changes under pkgchunk's mtime policy."""
    mo = pkgchunk_strategy.policy_mtimes(old)
    mn = pkgchunk_strategy.policy_mtimes(new)
    out = []
    for p, r in new.files.items():
        o = old.files.get(p)
        if o is None or (o.kind, o.digest, o.mode, o.uid, o.gid, o.size, mo[p]) != (
            r.kind, r.digest, r.mode, r.uid, r.gid, r.size, mn[p]
        ):
            out.append(p)
    return sorted(out)


def tar_gzip_bytes(root: Path, paths: list[str], scratch: Path) -> int:
    """Bytes of ``tar`` of exactly these paths piped into ``gzip -6``."""
    lst = scratch / "floor.list"
    lst.write_bytes(b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in paths))
    tar = subprocess.Popen(
        ["tar", "-C", str(root), "--no-recursion", "--null", "-T", str(lst), "-cf", "-"],
        stdout=subprocess.PIPE,
    )
    gz = subprocess.Popen(["gzip", "-6", "-n"], stdin=tar.stdout, stdout=subprocess.PIPE)
    assert tar.stdout is not None and gz.stdout is not None
    tar.stdout.close()
    n = 0
    while chunk := gz.stdout.read(1 << 20):
        n += len(chunk)
    if gz.wait() != 0 or tar.wait() != 0:
        raise SystemExit(f"tar | gzip of {len(paths)} paths under {root} failed")
    return n


# ---------------------------------------------------------------- per-layer breakdown


def breakdown(
    layout: Path, diff: dict[str, Any], old: model.Build, new: model.Build,
    changed: set[str], meta: set[str],
) -> list[dict[str, Any]]:
    """Every pulled layer: bytes, and its files by what happened to them."""
    man = manifest(layout, "new")
    blobs = {x["digest"]: x for x in man["layers"]}
    rows = []
    layers = diff["layers"]
    assert isinstance(layers, list)
    for lay in layers:
        if not lay["pulled"]:
            continue
        ann = blobs[lay["digest"]].get("annotations", {})
        content = metadata = same = 0
        est = {"content": 0, "metadata": 0, "same": 0}
        with tarfile.open(layout / "blobs/sha256" / lay["digest"][7:], "r:gz") as t:
            for m in t:
                p = m.name.rstrip("/")
                rec = new.files.get(p)
                if rec is None:
                    continue
                cls = "content" if p in changed else ("metadata" if p in meta else "same")
                est[cls] += rec.csize
                if cls == "content":
                    content += 1
                elif cls == "metadata":
                    metadata += 1
                else:
                    same += 1
        rows.append({
            "layer": lay["name"], "bytes": lay["bytes"],
            "groups": ann.get("org.pkgchunk.groups", ""),
            "files_content_changed": content, "files_metadata_changed": metadata,
            "files_same": same, "estimated_bytes": est,
        })
    rows.sort(key=lambda r: -int(r["bytes"]))
    return rows


# ---------------------------------------------------------------- other strategies, for real


def write_plan(build: model.Build, plan: list[list[str]], ref: str, prev: str | None) -> None:
    """One strategy's plan written by pkgchunk's writer from the policy-applied tree."""
    tree = pkgchunk_strategy.view(build).tree
    specs = [
        LayerSpec(f"layer-{i:03d}", tuple(sorted(paths, key=encode_path)))
        for i, paths in enumerate(plan) if paths
    ]
    reuse = {}
    if prev is not None:
        previous = open_previous(prev)
        reuse = dict(previous.reuse)
        previous.close()
    dirs = pkgchunk_strategy.view(build).directory_epoch
    labels = {MTIME_LABEL: MtimeRecord("clamp", None, dirs).label()}
    write_image(tree, minimal_config(), specs, ref, WriteOptions(reuse=reuse, labels=labels))


def other_strategy(
    name: str, budget: int, old: model.Build, new: model.Build, out: Path
) -> dict[str, Any]:
    layout = out / f"{name}-{budget}"
    shutil.rmtree(layout, ignore_errors=True)
    t = time.time()
    plans = score.plan_chain(STRATEGIES[name], [old, new], budget)
    write_plan(old, plans[0], f"oci:{layout}:old", None)
    write_plan(new, plans[1], f"oci:{layout}:new", f"oci:{layout}:old")
    res = pull_of(f"oci:{layout}:old", f"oci:{layout}:new")
    shutil.rmtree(layout, ignore_errors=True)  # 400 MB each; the numbers are kept
    return {"layers": len(res.layers), "pull_bytes": res.pull_bytes,
            "total_bytes": res.total_bytes, "docker_prefix_pull_bytes": res.prefix_pull_bytes,
            "seconds": round(time.time() - t, 1)}


# ---------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpu": cpu,
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "git": commit}


def one_budget(
    budget: int, work: Path, out: Path, old: model.Build, new: model.Build,
    changed: set[str], meta: set[str],
) -> dict[str, Any]:
    layout = out / f"pkgchunk-{budget}"
    shutil.rmtree(layout, ignore_errors=True)
    ref = f"oci:{layout}"
    n = ["--max-layers", str(budget)]
    src_old, src_new = f"oci:{work}/debian-old:latest", f"oci:{work}/debian-new:latest"
    cmds: list[str] = []
    times: dict[str, float] = {}

    def step(name: str, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        log(f"{budget}: pkgchunk {' '.join(args)}")
        cmds.append("pkgchunk " + " ".join(args))
        res, took = run(args, check)
        times[name] = round(took, 1)
        return res

    step("rechunk_old", ["rechunk", src_old, f"{ref}:old", *n])
    step("rechunk_new", ["rechunk", src_new, f"{ref}:new", *n, "--prev", f"{ref}:old"])
    step("rechunk_fresh", ["rechunk", src_new, f"{ref}:fresh", *n, "--fresh"])
    diff = json.loads(step("diff", ["diff", f"{ref}:old", f"{ref}:new", "--json"]).stdout)
    fresh = json.loads(step("diff_fresh", ["diff", f"{ref}:old", f"{ref}:fresh", "--json"]).stdout)
    verify = {}
    for tag, src in (("old", src_old), ("new", src_new), ("fresh", src_new)):
        res = step(f"verify_{tag}", ["verify", src, f"{ref}:{tag}"], check=False)
        verify[tag] = {"exit": res.returncode, "output": res.stdout.strip().splitlines()[:5]}
    return {
        "commands": cmds,
        "seconds": times,
        "layers": len(diff["layers"]),
        "pull_bytes": diff["pull_bytes"],
        "total_bytes": diff["total_bytes"],
        "docker_prefix_pull_bytes": diff["docker_prefix_pull_bytes"],
        "fresh": {k: fresh[k] for k in ("pull_bytes", "total_bytes", "docker_prefix_pull_bytes")},
        "changed_groups": [g["group"] for g in diff["changed_groups"]],
        "verify": verify,
        "pulled_layers": breakdown(layout, diff, old, new, changed, meta),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--budget", type=int, action="append", help="layer budgets (64 and 40)")
    ap.add_argument("--strategies", default=",".join(OTHERS),
                    help="other strategies to write for real, comma-separated, or 'none'")
    a = ap.parse_args(argv)
    others = [] if a.strategies == "none" else [n for n in a.strategies.split(",") if n]
    for name in others:
        if name not in STRATEGIES:
            ap.error(f"--strategies: unknown {name!r} (known: {', '.join(STRATEGIES)})")
    work, out = a.work.resolve(), a.out.resolve()
    scratch = out / "realupdate"
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    old, new = model.load_real(work)
    pkgchunk_strategy.register_root(old, work / "debian-old.rootfs")
    pkgchunk_strategy.register_root(new, work / "debian-new.rootfs")
    pkgchunk_strategy.start_chain(old)  # new keeps old's directory limit, as with --prev
    changed = changed_paths(old, new)
    meta = metadata_changed_paths(old, new)
    root = work / "debian-new.rootfs"
    floor = tar_gzip_bytes(root, changed, scratch)
    floor_meta = tar_gzip_bytes(root, meta, scratch)
    log(f"floor {floor / MB:.1f} MB ({len(changed)} files); with metadata "
        f"{floor_meta / MB:.1f} MB ({len(meta)} entries)")
    built = as_built(work)
    doc: dict[str, Any] = {
        "machine": machine(),
        "floor": {"bytes": floor, "files": len(changed),
                  "estimate_bytes": sum(new.files[p].csize for p in changed),
                  "definition": "tar of the new/content-changed paths | gzip -6"},
        "floor_with_metadata": {"bytes": floor_meta, "entries": len(meta)},
        "as_built": {**built, "ratio": built["pull_bytes"] / floor},
        "pkgchunk": {},
    }
    results: dict[str, Any] = {}
    for budget in a.budget or [64, 40]:
        r = one_budget(budget, work, scratch, old, new, set(changed), set(meta) - set(changed))
        r["ratio"] = int(r["pull_bytes"]) / floor
        fr = r["fresh"]
        assert isinstance(fr, dict)
        fr["ratio"] = fr["pull_bytes"] / floor
        by: dict[str, Any] = {}
        for name in others:
            log(f"{budget}: {name}: writing both builds")
            o = other_strategy(name, budget, old, new, scratch)
            o["ratio"] = o["pull_bytes"] / floor
            log(f"{budget}: {name}: pull {o['pull_bytes'] / MB:.1f} MB = {o['ratio']:.3f}x")
            by[name] = o
        r["others"] = by
        results[str(budget)] = r
        log(f"{budget} layers: pull {int(r['pull_bytes']) / MB:.1f} MB = {r['ratio']:.3f}x floor;"
            f" fresh {fr['pull_bytes'] / MB:.1f} MB = {fr['ratio']:.3f}x;"
            f" verify {[v['exit'] for v in r['verify'].values()]}")
    doc["pkgchunk"] = results
    doc["seconds"] = round(time.time() - t0, 1)
    (out / "realupdate.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(summary(doc))
    ok = all(v["exit"] == 0 for r in results.values()
             for v in r["verify"].values())
    return 0 if ok else 1


def summary(doc: dict[str, Any]) -> str:
    floor = doc["floor"]["bytes"]
    ab = doc["as_built"]
    lines = [
        f"floor: {floor / MB:.1f} MB; with metadata under pkgchunk's policy: "
        f"{doc['floor_with_metadata']['bytes'] / MB:.1f} MB",
        "| strategy | layers | pulled MB | x floor | Docker prefix MB |",
        "|---|---|---|---|---|",
        f"| as built | {ab['layers']} | {ab['pull_bytes'] / MB:.1f} | {ab['ratio']:.2f} | "
        f"{ab['pull_bytes'] / MB:.1f} |",
    ]
    for budget, r in doc["pkgchunk"].items():
        lines.append(f"| pkgchunk --max-layers {budget} --prev | {r['layers']} | "
                     f"{r['pull_bytes'] / MB:.1f} | {r['ratio']:.3f} | "
                     f"{r['docker_prefix_pull_bytes'] / MB:.1f} |")
        f = r["fresh"]
        lines.append(f"| pkgchunk --max-layers {budget} --fresh | {r['layers']} | "
                     f"{f['pull_bytes'] / MB:.1f} | {f['ratio']:.3f} | "
                     f"{f['docker_prefix_pull_bytes'] / MB:.1f} |")
        for name, o in r.get("others", {}).items():
            lines.append(f"| {name} ({budget}) | {o['layers']} | {o['pull_bytes'] / MB:.1f} | "
                         f"{o['ratio']:.3f} | {o['docker_prefix_pull_bytes'] / MB:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
