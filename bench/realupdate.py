#!/usr/bin/env python3
"""Real Debian updates end to end with the real CLI: what a client pulls, in real bytes.

    python3 bench/realupdate.py --pair bookworm-vm     # one pair (bench/corpus.py PAIRS)
    python3 bench/realupdate.py --pair all             # every pair, each reported separately

Writes ``bench/out/realupdate-PAIR.json`` per pair and prints one table per pair and budget.
For each layer budget (64 and 40), exactly what a user runs::

    pkgchunk rechunk oci:WORK/debian-old:latest oci:OUT:old --max-layers N
    pkgchunk rechunk oci:WORK/debian-new:latest oci:OUT:new --max-layers N --prev oci:OUT:old
    pkgchunk rechunk oci:WORK/debian-new:latest oci:OUT:fresh --max-layers N --fresh
    pkgchunk diff oci:OUT:old oci:OUT:new --json        # pull_bytes: real compressed blob bytes
    pkgchunk verify oci:WORK/debian-old:latest oci:OUT:old   # and new: must be identical

(WORK is the pair's corpus directory, ``corpus.pair_dir``; ``--fresh`` plans the new build
without the previous layout: pkgchunk without ``--prev``.) Measured in the same run:

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
* ``modelled``: every strategy of ``bench/strategies.py`` (pkgchunk's planner included, as
  ``run.py`` scores it) on this pair in the scoring model (per-file gzip estimates, no writing;
  seconds): pulled and Docker-prefix bytes against the estimated floor, under pkgchunk's mtime
  policy and under the same policy with unchanged entries carrying the previous build's mtime
  (``carry``: an entry whose type, mode, owner ids, size and content equal the old build's keeps
  its old tar header; the policy issue 11 asks of the product, applied to every strategy);
* the bounded strategies named by ``--strategies`` written for real at the same budget: their
  plans for both builds written by pkgchunk's writer from the same trees (pkgchunk's mtime
  policy, parent directories in every layer, gzip -6), the pull measured by ``pkgchunk.diff``:
  only the layering differs from pkgchunk's. About 2 min per strategy and budget on the VM pair.
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

import corpus  # noqa: E402
import model  # noqa: E402
import pkgchunk_strategy  # noqa: E402
import score  # noqa: E402
from strategies import STRATEGIES  # noqa: E402

from pkgchunk import LayerSpec, MtimeRecord, WriteOptions, open_previous, write_image  # noqa: E402
from pkgchunk import diff as pull_of  # noqa: E402

#: The config label holding the mtime policy a build applied (docs/planner.md).
MTIME_LABEL = "org.pkgchunk.mtime"

#: Every bounded strategy but pkgchunk's (which runs through its CLI).
OTHERS = ("apko-origin", "chunkah", "ostree-ext", "ostree-ext-fresh", "nix-popularity")
#: Written for real by default: the two closest to pkgchunk on earlier runs (time: ~2 min each
#: per budget); ``--strategies all`` writes every one. Every strategy is always modelled.
DEFAULT_REAL = ("apko-origin", "chunkah")

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


class Steps:
    """pkgchunk CLI runs of one benchmark cell: each logged, its command line and seconds kept
    for the JSON (``commands``, ``seconds``)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.commands: list[str] = []
        self.seconds: dict[str, float] = {}

    def __call__(
        self, name: str, args: list[str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        line = "pkgchunk " + " ".join(args)
        log(f"{self.prefix}{line}")
        self.commands.append(line)
        res, took = run(args, check)
        self.seconds[name] = round(took, 1)
        return res


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


def path_bytes(path: str) -> bytes:
    """A tree path as the bytes it names on disk (and the order pkgchunk sorts paths in)."""
    return path.encode("utf-8", "surrogateescape")


def tar_gzip_bytes(root: Path, paths: list[str], scratch: Path) -> int:
    """Bytes of ``tar`` of exactly these paths piped into ``gzip -6``."""
    lst = scratch / "floor.list"
    lst.write_bytes(b"".join(path_bytes(p) + b"\0" for p in paths))
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
    """One strategy's plan written by pkgchunk's writer from the policy-applied tree, with the
    config pkgchunk gives a ``rootfs:`` input."""
    view = pkgchunk_strategy.view(build)
    assert view.config is not None, f"{build.name}: not read from a real root"
    specs = [
        LayerSpec(f"layer-{i:03d}", tuple(sorted(paths, key=path_bytes)))
        for i, paths in enumerate(plan) if paths
    ]
    reuse = {}
    if prev is not None:
        previous = open_previous(prev)
        reuse = dict(previous.reuse)
        previous.close()
    labels = {MTIME_LABEL: MtimeRecord("clamp", None, view.directory_epoch).label()}
    write_image(view.tree, view.config, specs, ref, WriteOptions(reuse=reuse, labels=labels))


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


# ---------------------------------------------------------------- every strategy, modelled


def carried(old: model.Build, new: model.Build, ho: dict[str, bytes],
            hn: dict[str, bytes]) -> dict[str, bytes]:
    """New entry hashes when an entry equal to the old one but for its mtime keeps the old one."""
    out = dict(hn)
    for p, r in new.files.items():
        o = old.files.get(p)
        if o is not None and (o.kind, o.mode, o.uid, o.gid, o.size, o.digest) == (
            r.kind, r.mode, r.uid, r.gid, r.size, r.digest
        ):
            out[p] = ho[p]
    return out


def modelled(old: model.Build, new: model.Build, budgets: list[int]) -> dict[str, Any]:
    """Every strategy scored on old -> new: {budget: {strategy: {policy: cost}}}, floor."""
    mode = pkgchunk_strategy.POLICY_MODE
    ho, hn = score.entry_hashes(old, mode), score.entry_hashes(new, mode)
    hc = carried(old, new, ho, hn)
    floor = score.floor_bytes(old, new)
    res: dict[str, Any] = {"floor_estimate": floor, "budgets": {}}
    for budget in budgets:
        by: dict[str, Any] = {}
        for name, strat in STRATEGIES.items():
            po, pn = score.plan_chain(strat, [old, new], budget)
            lo = score.layers_of(old, po, ho, True)
            cost = {}
            for pol, h in (("policy", hn), ("carry", hc)):
                c = score.update_cost(lo, score.layers_of(new, pn, h, True), floor)
                cost[pol] = {k: c[k] for k in ("layers", "total", "pulled", "pulled_docker",
                                               "ratio", "ratio_docker")}
            by[name] = cost
        res["budgets"][str(budget)] = by
    return res


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
    base = subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO,
                          capture_output=True, text=True).stdout.strip()[:7]
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpu": cpu,
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "git": commit, "main": base}


def one_budget(
    budget: int, work: Path, out: Path, old: model.Build, new: model.Build,
    changed: set[str], meta: set[str],
) -> dict[str, Any]:
    """pkgchunk through its CLI at one budget: rechunk old, --prev, --fresh; diff; verify."""
    layout = out / f"pkgchunk-{budget}"
    shutil.rmtree(layout, ignore_errors=True)
    ref = f"oci:{layout}"
    n = ["--max-layers", str(budget)]
    src_old, src_new = f"oci:{work}/debian-old:latest", f"oci:{work}/debian-new:latest"
    step = Steps(f"{budget}: ")

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
        "commands": step.commands,
        "seconds": step.seconds,
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--pair", default=corpus.DEFAULT_PAIR, choices=[*corpus.PAIRS, "all"],
                    help=f"which corpus pair (default {corpus.DEFAULT_PAIR}), or all")
    ap.add_argument("--budget", type=int, action="append", help="layer budgets (64 and 40)")
    ap.add_argument("--strategies", default=",".join(DEFAULT_REAL),
                    help="other strategies to write for real, comma-separated, 'all' or 'none'")
    ap.add_argument("--no-cli", action="store_true",
                    help="skip pkgchunk's CLI runs (floors and the modelled table only)")
    ap.add_argument("--summary", action="store_true",
                    help="only print the cross-pair tables from out/realupdate-*.json")
    a = ap.parse_args(argv)
    if a.summary:
        print(cross_pair(a.out.resolve(), a.budget or [40, 64]))
        return 0
    if a.strategies == "all":
        others = list(OTHERS)
    else:
        others = [] if a.strategies == "none" else [n for n in a.strategies.split(",") if n]
    for name in others:
        if name not in STRATEGIES:
            ap.error(f"--strategies: unknown {name!r} (known: {', '.join(STRATEGIES)})")
    pairs = list(corpus.PAIRS) if a.pair == "all" else [a.pair]
    rc = 0
    for pair in pairs:
        work = corpus.pair_dir(a.work.resolve(), pair)
        if not (work / "debian-new" / "index.json").exists():
            log(f"{pair}: no corpus in {work}: run bench/corpus.py --pair {pair} (root)")
            rc = 2
            continue
        rc = max(rc, one_pair(pair, work, a.out.resolve(), a.budget or [64, 40], others,
                              not a.no_cli))
    return rc


def one_pair(pair: str, work: Path, out: Path, budgets: list[int], others: list[str],
             with_cli: bool) -> int:
    scratch = out / "realupdate" / pair
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    old, new = model.load_real(work)
    pkgchunk_strategy.forget([old, new])
    pkgchunk_strategy.register_root(old, work / "debian-old.rootfs")
    pkgchunk_strategy.register_root(new, work / "debian-new.rootfs")
    pkgchunk_strategy.start_chain(old)  # new keeps old's directory limit, as with --prev
    changed = changed_paths(old, new)
    meta = metadata_changed_paths(old, new)
    root = work / "debian-new.rootfs"
    floor = tar_gzip_bytes(root, changed, scratch)
    floor_meta = tar_gzip_bytes(root, meta, scratch)
    log(f"{pair}: floor {floor / MB:.1f} MB ({len(changed)} files); with metadata "
        f"{floor_meta / MB:.1f} MB ({len(meta)} entries)")
    built = as_built(work)
    update = json.loads((work / "update.json").read_text())
    doc: dict[str, Any] = {
        "pair": pair,
        "machine": machine(),
        "update": {
            "old_packages": update["old_packages"], "new_packages": update["new_packages"],
            "upgraded": len(update["upgraded"]), "added": len(update["added"]),
            "removed": len(update["removed"]),
            "changed_source_packages": update["changed_source_packages"],
            "kernel_abi_changed": update["kernel_abi_changed"],
            "files": len(new.files),
        },
        "floor": {"bytes": floor, "files": len(changed),
                  "estimate_bytes": sum(new.files[p].csize for p in changed),
                  "definition": "tar of the new/content-changed paths | gzip -6"},
        "floor_with_metadata": {"bytes": floor_meta, "entries": len(meta)},
        "as_built": {**built, "ratio": built["pull_bytes"] / floor},
        "pkgchunk": {},
    }
    t = time.time()
    doc["modelled"] = modelled(old, new, sorted({*budgets, 40, 64}, reverse=True))
    log(f"{pair}: modelled every strategy in {time.time() - t:.0f}s")
    pkgchunk_strategy.start_chain(old)
    results: dict[str, Any] = {}
    for budget in budgets:
        r: dict[str, Any] = {}
        if with_cli:
            r = one_budget(budget, work, scratch, old, new, set(changed), set(meta) - set(changed))
            r["ratio"] = int(r["pull_bytes"]) / floor
            r["ratio_docker"] = int(r["docker_prefix_pull_bytes"]) / floor
            fr = r["fresh"]
            fr["ratio"] = fr["pull_bytes"] / floor
            fr["ratio_docker"] = fr["docker_prefix_pull_bytes"] / floor
            log(f"{pair} {budget} layers: pull {int(r['pull_bytes']) / MB:.1f} MB = "
                f"{r['ratio']:.3f}x floor; fresh {fr['pull_bytes'] / MB:.1f} MB = "
                f"{fr['ratio']:.3f}x; verify {[v['exit'] for v in r['verify'].values()]}")
        by: dict[str, Any] = {}
        for name in others:
            log(f"{pair} {budget}: {name}: writing both builds")
            o = other_strategy(name, budget, old, new, scratch)
            o["ratio"] = o["pull_bytes"] / floor
            o["ratio_docker"] = o["docker_prefix_pull_bytes"] / floor
            log(f"{pair} {budget}: {name}: pull {o['pull_bytes'] / MB:.1f} MB = "
                f"{o['ratio']:.3f}x")
            by[name] = o
        r["others"] = by
        results[str(budget)] = r
    doc["pkgchunk"] = results
    doc["seconds"] = round(time.time() - t0, 1)
    (out / f"realupdate-{pair}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(summary(doc), flush=True)
    ok = all(v["exit"] == 0 for r in results.values() for v in r.get("verify", {}).values())
    return 0 if ok else 1


def summary(doc: dict[str, Any]) -> str:
    """One markdown table per budget: real bytes where written, the model for every strategy."""
    floor = doc["floor"]["bytes"]
    u = doc["update"]
    ab = doc["as_built"]
    mod = doc["modelled"]
    est = mod["floor_estimate"]
    lines = [
        f"### {doc['pair']} (git {doc['machine']['git']})",
        "",
        f"{u['new_packages']} packages, {u['files']} paths; {u['upgraded']} upgraded, "
        f"{u['added']} added, {u['removed']} removed, "
        f"{len(u['changed_source_packages'])} source packages changed; kernel ABI changed: "
        f"{u['kernel_abi_changed']}. Floor (tar | gzip -6 of content-changed/new files): "
        f"{floor / MB:.1f} MB (estimate {est / MB:.1f} MB); with metadata under pkgchunk's "
        f"policy: {doc['floor_with_metadata']['bytes'] / MB:.1f} MB "
        f"({doc['floor_with_metadata']['bytes'] / floor:.2f}x). As built ({ab['layers']} layers):"
        f" {ab['pull_bytes'] / MB:.1f} MB pulled ({ab['ratio']:.2f}x).",
        "",
    ]
    for budget, by in mod["budgets"].items():
        real = doc["pkgchunk"].get(budget, {})
        lines += [
            f"At {budget} layers. real: written and pulled for real (x the real floor); "
            "modelled: the scoring model (x the estimated floor); carry: modelled with unchanged "
            "entries keeping their previous mtime.",
            "",
            "| strategy | layers | real MB | real x floor | real Docker x | modelled x | "
            "modelled Docker x | carry x | carry Docker x |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        realby: dict[str, Any] = dict(real.get("others", {}))
        if "pull_bytes" in real:
            realby["pkgchunk"] = real
            realby["pkgchunk-fresh"] = {**real["fresh"], "layers": real["layers"]}
        for name, m in by.items():
            p, c = m["policy"], m["carry"]
            r = realby.get(name)
            rcols = (f"{r['pull_bytes'] / MB:.1f} | {r['ratio']:.3f} | {r['ratio_docker']:.2f}"
                     if r else "– | – | –")
            label = {"pkgchunk": "pkgchunk --prev", "pkgchunk-fresh": "pkgchunk --fresh"}.get(
                name, name)
            lines.append(f"| {label} | {p['layers']} | {rcols} | {p['ratio']:.3f} | "
                         f"{p['ratio_docker']:.2f} | {c['ratio']:.3f} | {c['ratio_docker']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def cross_pair(out: Path, budgets: list[int]) -> str:
    """Every pair side by side, per budget: x floor per strategy, real bytes where written."""
    docs = [json.loads(f.read_text()) for f in sorted(out.glob("realupdate-*.json"))]
    docs = [d for d in docs if "pair" in d]
    names = list(docs[0]["modelled"]["budgets"][str(budgets[0])]) if docs else []
    names = [n for n in names if n not in ("as-built", "squashed")]
    lines = [
        "| pair | main at | packages | paths | upgraded | source packages changed | kernel ABI "
        "bump | floor MB | with metadata | as built pulled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in docs:
        u, fl = d["update"], d["floor"]["bytes"]
        lines.append(
            f"| {d['pair']} | {d['machine'].get('main', '?')} | "
            f"{u['old_packages']} -> {u['new_packages']}"
            f" | {u['files']} | {u['upgraded']} (+{u['added']} -{u['removed']}) | "
            f"{len(u['changed_source_packages'])} | {'yes' if u['kernel_abi_changed'] else 'no'}"
            f" | {fl / MB:.1f} | {d['floor_with_metadata']['bytes'] / MB:.1f} MB "
            f"({d['floor_with_metadata']['bytes'] / fl:.2f}x) | "
            f"{d['as_built']['pull_bytes'] / MB:.1f} MB ({d['as_built']['ratio']:.2f}x) |")
    lines.append("")
    for budget in budgets:
        b = str(budget)
        lines += [
            f"At {budget} layers: x content floor (real bytes, `tar | gzip -6` floor) where "
            "written for real, else modelled (estimated floor, marked m); Docker: classic "
            "store, x floor; carry: modelled with unchanged entries keeping their mtime.",
            "",
            "| pair | floor MB | metadata floor | " + " | ".join(names)
            + " | pkgchunk Docker | lowest of all? | carry: pkgchunk | carry: lowest other |",
            "|---|---|---|" + "---|" * len(names) + "---|---|---|---|",
        ]
        for d in docs:
            floor = d["floor"]["bytes"]
            mod = d["modelled"]["budgets"].get(b)
            if mod is None:
                continue
            real = d["pkgchunk"].get(b, {})
            realby = dict(real.get("others", {}))
            if "pull_bytes" in real:
                realby["pkgchunk"] = real
                realby["pkgchunk-fresh"] = real["fresh"]
            cells, vals = [], {}
            for n in names:
                if n in realby:
                    v = realby[n]["ratio"]
                    cells.append(f"{v:.3f}")
                else:
                    v = mod[n]["policy"]["ratio"]
                    cells.append(f"{v:.3f} m")
                vals[n] = v
            bounded = {n: v for n, v in vals.items() if n != "per-source (unbounded)"}
            best = min(bounded, key=lambda n: bounded[n])
            dock = (f"{real['ratio_docker']:.2f}" if "ratio_docker" in real
                    else f"{mod['pkgchunk']['policy']['ratio_docker']:.2f} m")
            carry = {n: mod[n]["carry"]["ratio"] for n in bounded}
            other = min((n for n in carry if not n.startswith("pkgchunk")),
                        key=lambda n: carry[n])
            lines.append(
                f"| {d['pair']} | {floor / MB:.1f} | "
                f"{d['floor_with_metadata']['bytes'] / floor:.2f} | " + " | ".join(cells)
                + f" | {dock} | {'yes' if best == 'pkgchunk' else 'no: ' + best} | "
                f"{carry['pkgchunk']:.2f} m | {carry[other]:.2f} m ({other}) |"
            )
        dk = [d["pkgchunk"][b]["ratio_docker"] for d in docs
              if "ratio_docker" in d["pkgchunk"].get(b, {})]
        if dk:
            lines += ["", f"Docker classic store, pkgchunk --prev, mean over {len(dk)} pairs: "
                      f"{sum(dk) / len(dk):.2f}x"]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
