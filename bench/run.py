#!/usr/bin/env python3
"""Run the benchmark: every strategy on the real Debian update and on the synthetic series.

    python3 bench/run.py            # full run (builds the corpus first if missing: root + network)
    python3 bench/run.py --quick    # seconds: a tiny synthetic image, for CI smoke tests

Writes ``results.json`` and ``results.md`` into ``--out`` (bench/out, or bench/out/quick).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import model  # noqa: E402
import pkgchunk_strategy  # noqa: E402  (registers pkgchunk and the pkgchunk-policy mode)
import rpmimage  # noqa: E402
import score  # noqa: E402
import series  # noqa: E402
from model import Build, FileRec, PkgInfo  # noqa: E402
from strategies import STRATEGIES  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- quick mode: a toy image


def toy_build(seed: int = 7, npkg: int = 48) -> Build:
    """A small dpkg-shaped image: packages with files, deps, changelogs, a kernel, unowned files."""
    rng = random.Random(seed)
    sde = 1_750_000_000
    built = sde + 3 * 86400
    pkgs: dict[str, PkgInfo] = {}
    files: dict[str, FileRec] = {}

    def add(
        path: str, kind: str, size: int, owner: str | None, mtime: int, elf: bool = False
    ) -> None:
        digest = f"{seed}:{path}" if kind == "reg" else ""
        csize = (max(20, int(size * rng.uniform(0.2, 0.6))) if kind == "reg" else 0)
        files[path] = FileRec(kind, 0o755 if kind == "dir" else 0o644, 0, 0, mtime, size,
                              digest, csize + model.ENTRY_OVERHEAD, owner, elf)

    for d in ("usr", "usr/bin", "usr/lib", "usr/share", "usr/share/doc", "var", "var/lib",
              "var/lib/dpkg", "var/lib/dpkg/info", "boot", "usr/lib/modules"):
        add(d, "dir", 0, None, built)
    names = [f"pkg{i:02d}" for i in range(npkg)] + ["linux-image-6.1.0-1-amd64"]
    for i, n in enumerate(names):
        src = "linux-signed" if n.startswith("linux") else f"src{i // 2:02d}"
        pdate = sde - rng.randrange(30, 900) * 86400
        ndates = rng.choice([1, 1, 2, 3, 5, 12])
        dates = tuple(sorted((pdate - j * rng.randrange(20, 200) * 86400 for j in range(ndates)),
                             reverse=True))
        deps = tuple(sorted({names[j] for j in rng.sample(range(i), min(i, 3))})) if i else ()
        total = 0
        kernel = n.startswith("linux")
        nfiles = 120 if kernel else rng.randrange(3, 25)
        for j in range(nfiles):
            if kernel:
                p = f"usr/lib/modules/6.1.0-1-amd64/m{j:03d}.ko"
                size, elf = rng.randrange(2000, 60000), True
            elif j == 0:
                p, elf = f"usr/share/doc/{n}/changelog.Debian.gz", False
                size = rng.randrange(300, 4000)
            elif j % 3 == 1:
                p, size, elf = f"usr/bin/{n}-{j}", int(math.exp(rng.uniform(7, 13))), True
            else:
                p, size, elf = f"usr/share/{n}/data{j}", int(math.exp(rng.uniform(5, 11))), False
            add(p, "reg", size, n, pdate, elf)
            total += size
        add(f"usr/share/doc/{n}", "dir", 0, n, built)
        add(f"var/lib/dpkg/info/{n}.list", "reg", 400, None, built)
        add(f"var/lib/dpkg/info/{n}.md5sums", "reg", 900, None, built)
        pkgs[n] = PkgInfo(n, "1.0-1", src, total // 1024, deps, (), dates)
    add("var/lib/dpkg/status", "reg", 90000, None, built)
    add("var/log/dpkg.log", "reg", 40000, None, built)
    add("boot/initrd.img-6.1.0-1-amd64", "reg", 3_000_000, None, built)
    base = sorted(p for p, r in files.items() if r.owner in names[:8] or r.owner is None)
    rest = sorted(set(files) - set(base))
    return Build("toy-0", files, pkgs, sde, [base, rest])


def quick(out: Path) -> dict[str, object]:
    t0 = time.time()
    start = toy_build()
    rates = series.Rates(volatile_unowned=("var/lib/dpkg/status", "var/log/dpkg.log"))
    pkgchunk_strategy.start_chain(start)
    builds = [start, *series.generate(start, 6, rates, seed=3)]
    res = score.score_chain(STRATEGIES, builds, [8, 16])
    doc = {"mode": "quick", "builds": len(builds), "files": len(start.files),
           "series": res, "seconds": round(time.time() - t0, 2)}
    write(out, doc, [("toy series (6 updates)", res)])
    return doc


# ---------------------------------------------------------------- full run


def estimate_check(work: Path, new: Build) -> dict[str, object]:
    """Per-file gzip estimate vs the real gzip layer blobs of debian-new."""
    import ocitar

    cache = model.CsizeCache(work / "csize-cache.json")
    base = model.scan_rootfs(work / "debian-new.base", "base", new.sde, cache, with_dpkg=False)
    cache.save()
    img = work / "debian-new"
    index = json.loads((img / "index.json").read_text())
    mdig = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((img / "blobs/sha256" / mdig).read_text())
    real = [x["size"] for x in manifest["layers"]]
    l2 = json.loads((img / "bench-layers.json").read_text())
    est1 = sum(r.csize for r in base.files.values())
    est2 = sum(new.files[p].csize for p in l2["layer2_paths"]) + model.ENTRY_OVERHEAD * len(
        l2["layer2_whiteouts"]
    )
    del ocitar
    rows = []
    for i, (e, r) in enumerate(zip([est1, est2], real, strict=True), 1):
        rows.append({"layer": i, "estimated": e, "real_gzip": r, "error": (e - r) / r})
    return {"entry_overhead": model.ENTRY_OVERHEAD, "layers": rows,
            "total_error": (est1 + est2 - sum(real)) / sum(real)}


def real_blob_update(work: Path) -> dict[str, object]:
    """The real as-built update measured on the OCI blobs themselves (reuse by digest)."""
    def layers(state: str) -> list[tuple[str, int]]:
        img = work / f"debian-{state}"
        index = json.loads((img / "index.json").read_text())
        m = json.loads((img / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
        return [(x["digest"], x["size"]) for x in m["layers"]]

    old, new = layers("old"), layers("new")
    have = {d for d, _ in old}
    return {"old_layers": old, "new_layers": new,
            "pulled": sum(s for d, s in new if d not in have), "total": sum(s for _, s in new)}


def full(work: Path, out: Path, steps: int, budgets: list[int]) -> dict[str, object]:
    timings: dict[str, float] = {}
    t = time.time()
    if not (work / "debian-new" / "index.json").exists() or not (work / "update.json").exists():
        import corpus

        log("corpus missing: building it (needs root and the Debian mirror)")
        if corpus.main(["--out", str(work)]) != 0:
            raise SystemExit(2)
    timings["corpus"] = time.time() - t
    t = time.time()
    old, new = model.load_real(work)
    pkgchunk_strategy.register_root(old, work / "debian-old.rootfs")
    pkgchunk_strategy.register_root(new, work / "debian-new.rootfs")
    timings["scan"] = time.time() - t
    log(f"real builds: {len(old.files)} / {len(new.files)} paths, {len(new.packages)} packages")
    t = time.time()
    est = estimate_check(work, new)
    timings["estimate_check"] = time.time() - t
    log(f"size estimate error: {est['total_error']:+.2%}")
    t = time.time()
    pkgchunk_strategy.start_chain(old)
    real = score.score_chain(STRATEGIES, [old, new], budgets, log)
    timings["real_update"] = time.time() - t
    t = time.time()
    pkgchunk_strategy.forget([old])
    pkgchunk_strategy.register_reference(new)
    pkgchunk_strategy.start_chain(new)
    rates, calib = series.calibrate(old, new)
    builds = [new, *series.generate(new, steps, rates)]
    timings["series_generate"] = time.time() - t
    t = time.time()
    ser = score.score_chain(STRATEGIES, builds, budgets, log)
    timings["series_score"] = time.time() - t
    rpm_res: object = None
    if (rpmimage.FIXTURE / "files.tsv").exists():
        t = time.time()
        pkgchunk_strategy.forget(builds)
        rb = rpmimage.load_build(work, model.CsizeCache(work / "csize-cache.json"))
        pkgchunk_strategy.register_root(rb, work / f"{rpmimage.NAME}.rootfs")
        pkgchunk_strategy.register_reference(rb)
        pkgchunk_strategy.start_chain(rb)
        rrates = replace(rates, volatile_unowned=("var/lib/rpm/rpmdb.sqlite",))
        rbuilds = [rb, *series.generate(rb, steps, rrates)]
        rpm_res = score.score_chain(STRATEGIES, rbuilds, budgets, log)
        timings["rpm_series"] = time.time() - t
    else:
        log(f"{rpmimage.FIXTURE}: absent, RPM series skipped")
    update = json.loads((work / "update.json").read_text())
    doc = {
        "mode": "full",
        "corpus": {
            "old": {"paths": len(old.files), "packages": len(old.packages),
                    "bytes": sum(r.size for r in old.files.values())},
            "new": {"paths": len(new.files), "packages": len(new.packages),
                    "bytes": sum(r.size for r in new.files.values())},
            "update": {k: update[k] for k in ("upgraded", "added", "removed",
                                               "kernel_packages", "kernel_abi_changed")},
        },
        "estimate_check": est,
        "real_blob_update": real_blob_update(work),
        "calibration": {k: v for k, v in calib.items() if k != "volatile_unowned_files"},
        "volatile_unowned_files": calib["volatile_unowned_files"],
        "series_steps": series.summarise(builds[1:], new),
        "real_update": real,
        "series": ser,
        "rpm_series": rpm_res,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    blocks: list[tuple[str, object]] = [
        ("real update debian-old -> debian-new", real),
        (f"synthetic series ({steps} updates from debian-new)", ser),
    ]
    if rpm_res is not None:
        blocks.append((f"RPM (Mariner 2.0 rpmdb) synthetic series ({steps} updates)", rpm_res))
    write(out, doc, blocks)
    return doc


POLICY = pkgchunk_strategy.POLICY_MODE
#: Not bounded by the layer budget: left out when marking the lowest pull of a budget.
UNBOUNDED = ("as-built", "squashed", "per-source (unbounded)")


def summary(blocks: list[tuple[str, object]]) -> str:
    """One compact table: per budget and strategy, pulled MB and x floor for every block.

    The headline columns use pkgchunk's mtime policy with parent directories for every
    strategy (the same metadata for all); ``clamped`` is the harness's policy of
    design-notes §1 without parent directories. The lowest bounded pull of a budget is bold.
    """
    mb = 1e6
    head = "| budget | strategy | layers (first block) |"
    sep = "|---|---|---|"
    for title, _ in blocks:
        short = title.split(" (")[0].split(" debian")[0]
        head += (f" {short}: mean MB (x floor) | {short}: worst x | {short}: Docker x |"
                 f" {short}: clamped x |")
        sep += "---|---|---|---|"
    lines = [head, sep]
    first = blocks[0][1]
    assert isinstance(first, dict)
    for budget, by in first.items():
        best: dict[int, float] = {}
        for i, (_, res) in enumerate(blocks):
            assert isinstance(res, dict)
            best[i] = min(s[POLICY]["ratio_mean"] for n, s in res[budget].items()
                          if n not in UNBOUNDED)
        for name in by:
            row = f"| {budget} | {name} | {by[name][POLICY]['layers']} |"
            for i, (_, res) in enumerate(blocks):
                assert isinstance(res, dict)
                s = res[budget][name]
                p, c = s[POLICY], s["clamped"]
                cell = f"{p['pulled_mean'] / mb:.1f} ({p['ratio_mean']:.2f}x)"
                if name not in UNBOUNDED and p["ratio_mean"] == best[i]:
                    cell = f"**{cell}**"
                row += (
                    f" {cell} | {p['ratio_worst']:.2f} | {p['ratio_docker_mean']:.2f} |"
                    f" {c['ratio_mean']:.2f} |"
                )
            lines.append(row)
    return "\n".join(lines)


def write(out: Path, doc: dict[str, object], blocks: list[tuple[str, object]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    md = ["# pkgchunk benchmark results", "",
          f"Command: `python3 bench/run.py{' --quick' if doc['mode'] == 'quick' else ''}`", "",
          "## Summary: mean pulled bytes per update (x the floor of changed files)", "",
          "Headline columns: every strategy scored with pkgchunk's mtime policy and the parent",
          "directories a layer writer adds (`pkgchunk-policy`); `clamped`: the harness's policy",
          "(design-notes §1) without parent directories. Bold: lowest bounded pull per budget.",
          "",
          summary(blocks), "", "## Details", ""]
    for title, res in blocks:
        for mode in score.modes():
            md.append(score.table(res, title, mode))  # type: ignore[arg-type]
    (out / "results.md").write_text("\n".join(md) + "\n")
    log(f"wrote {out / 'results.json'} and results.md")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny synthetic image, seconds")
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--budget", type=int, action="append", help="layer budgets (64 and 40)")
    a = ap.parse_args(argv)
    if a.quick:
        quick(a.out or HERE / "out" / "quick")
    else:
        full(a.work, a.out or HERE / "out", a.steps, a.budget or [64, 40])
    return 0


if __name__ == "__main__":
    sys.exit(main())
