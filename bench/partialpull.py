#!/usr/bin/env python3
"""zstd:chunked on the real Debian update: what a partial-pull client fetches, and how fast.

    python3 bench/partialpull.py [--work bench/work] [--out bench/out]   # ~15 min on 2 cores

For each layer budget (64 and 40), exactly what a user runs::

    pkgchunk rechunk oci:WORK/debian-old:latest oci:OUT:old --max-layers N \\
        --compression zstd:chunked
    pkgchunk rechunk oci:WORK/debian-new:latest oci:OUT:new --max-layers N \\
        --compression zstd:chunked --prev oci:OUT:old
    pkgchunk diff oci:OUT:old oci:OUT:new --json

``diff`` reports ``pull_bytes`` (whole blobs, what Docker/containerd/bootc and podman without
partial pulls fetch) and ``partial_pull_bytes`` (TOCs + tar-split + the missing chunks, in
ranges merged as containers/storage merges them; ``ranges`` counts them). Its model was checked
against podman 4.3 and a registry's log in tests/test_partialpull_podman.py.

The **content floor** of a partial pull: every regular file of the new root whose content
(sha256) the old root does not hold anywhere, each compressed alone by zstd at the same level
(3): the least a client that fetches files by digest can download. Measured from
``debian-{old,new}.rootfs``.

Speed: ``rechunk --fresh`` of the new image at 64 layers with ``--compression zstd`` and
``zstd:chunked``, against the floor ``bench/speed.py`` uses for zstd: decompressing the input
layers (``gzip -dc``) plus ``tar | zstd -3`` of the new root; wall and CPU (user + system)
seconds, best of ``--repeat`` interleaved runs (CPU time is the steadier figure on a shared
machine). ``--speed-only`` reruns just that into an existing ``partialpull.json``.

Also, for comparison, the as-built images (2 layers) converted to zstd:chunked by
``skopeo copy --dest-compress-format zstd:chunked`` (the Go reference writer), costed by the
same ``pkgchunk diff`` model; skopeo 1.9.3 fails on a layer with a non-ASCII PAX path ("short
write"), which is then recorded as such.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zstandard

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MB = 1e6


def log(msg: str) -> None:
    print(f"[partialpull {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pkgchunk(*args: str, cpu: list[float] | None = None) -> tuple[str, float]:
    """stdout and wall seconds; the CPU seconds (user + system) are appended to ``cpu``."""
    exe = shutil.which("pkgchunk")
    cmd = [exe] if exe else [sys.executable, "-m", "pkgchunk.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SOURCE_DATE_EPOCH", None)
    log("pkgchunk " + " ".join(args))
    t, c = time.time(), _cpu()
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise SystemExit(f"pkgchunk {' '.join(args)}: exit {res.returncode}\n{res.stderr}")
    if cpu is not None:
        cpu.append(_cpu() - c)
    return res.stdout, time.time() - t


def regular_files(root: Path) -> dict[str, str]:
    """path -> sha256 of every regular file under root."""
    out = {}
    for base, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[path] = h.hexdigest()
    return out


def content_floor(work: Path) -> dict[str, Any]:
    old = regular_files(work / "debian-old.rootfs")
    new = regular_files(work / "debian-new.rootfs")
    have = set(old.values())
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=False, write_content_size=False)
    seen: set[str] = set()
    floor = raw = files = 0
    for path, digest in sorted(new.items()):
        if digest in have or digest in seen:
            continue
        seen.add(digest)
        with open(path, "rb") as f:
            data = f.read()
        if data:
            floor += len(cctx.compress(data))
            raw += len(data)
            files += 1
    return {"bytes": floor, "uncompressed": raw, "files": files}


def timed(cmd: str) -> tuple[float, float]:
    """(wall, CPU) seconds of a shell pipeline."""
    t, c = time.time(), _cpu()
    subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], check=True)
    return time.time() - t, _cpu() - c


def zstd_floor(work: Path) -> tuple[float, float]:
    """(wall, CPU) seconds: gzip -dc of the new image's layers, plus tar | zstd -3 of its root."""
    index = json.loads((work / "debian-new/index.json").read_text())
    blobs = work / "debian-new/blobs/sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    wall = cpu = 0.0
    cmds = [f"gzip -dc {blobs / layer['digest'][7:]} >/dev/null" for layer in manifest["layers"]]
    cmds.append(f"tar -C {work / 'debian-new.rootfs'} -cf - . | zstd -3 -q -c >/dev/null")
    for cmd in cmds:
        w, c = timed(cmd)
        wall += w
        cpu += c
    return wall, cpu


def budget_run(budget: int, work: Path, out: Path, floor: int) -> dict[str, Any]:
    layout = out / f"zstdchunked-{budget}"
    shutil.rmtree(layout, ignore_errors=True)
    ref = f"oci:{layout}"
    n = ["--max-layers", str(budget), "--compression", "zstd:chunked"]
    src_old, src_new = f"oci:{work}/debian-old:latest", f"oci:{work}/debian-new:latest"
    _, t_old = pkgchunk("rechunk", src_old, f"{ref}:old", *n)
    _, t_new = pkgchunk("rechunk", src_new, f"{ref}:new", *n, "--prev", f"{ref}:old")
    doc = json.loads(pkgchunk("diff", f"{ref}:old", f"{ref}:new", "--json")[0])
    verify, _ = pkgchunk("verify", src_new, f"{ref}:new")
    part = doc["partial_pull"]
    return {
        "layers": len(doc["layers"]),
        "pulled_layers": sum(la["pulled"] for la in doc["layers"]),
        "whole_blob_pull_bytes": doc["pull_bytes"],
        "total_bytes": doc["total_bytes"],
        "partial_pull_bytes": doc["partial_pull_bytes"],
        "partial_pull": part,
        "x_floor": round(doc["partial_pull_bytes"] / floor, 3),
        "seconds": {"rechunk_old": round(t_old, 1), "rechunk_new_prev": round(t_new, 1)},
        "verify": verify.strip().splitlines()[-1:],
    }


def skopeo_as_built(work: Path, out: Path) -> dict[str, Any]:
    conv = out / "skopeo-chunked"
    shutil.rmtree(conv, ignore_errors=True)
    res: dict[str, Any] = {}
    for tag, src in (("old", "debian-old"), ("new", "debian-new")):
        proc = subprocess.run(
            ["skopeo", "copy", "-q", "--dest-compress-format", "zstd:chunked",
             f"oci:{work / src}:latest", f"oci:{conv}:{tag}"],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode:
            res["error"] = f"skopeo copy {src}: {proc.stderr.strip()[-300:]}"
            return res
    doc = json.loads(pkgchunk("diff", f"oci:{conv}:old", f"oci:{conv}:new", "--json")[0])
    return {"whole_blob_pull_bytes": doc["pull_bytes"],
            "partial_pull_bytes": doc["partial_pull_bytes"], "partial_pull": doc["partial_pull"]}


def speed(work: Path, out: Path, repeat: int) -> dict[str, Any]:
    """Best of ``repeat`` (wall and CPU seconds, each its own best) for the floor and for
    ``rechunk --fresh`` at 64 layers with zstd and zstd:chunked, interleaved."""
    src_new = f"oci:{work}/debian-new:latest"
    runs: dict[str, list[tuple[float, float]]] = {"floor": [], "zstd": [], "zstd:chunked": []}
    sizes: dict[str, int] = {}
    for _ in range(repeat):
        log("floor: gzip -dc + tar | zstd -3")
        runs["floor"].append(zstd_floor(work))
        for comp in ("zstd", "zstd:chunked"):
            dest = out / f"speed-{comp.replace(':', '-')}"
            shutil.rmtree(dest, ignore_errors=True)
            cpu: list[float] = []
            _, took = pkgchunk("rechunk", src_new, f"oci:{dest}:t", "--fresh",
                               "--compression", comp, cpu=cpu)
            runs[comp].append((took, cpu[0]))
            sizes[comp] = sum(f.stat().st_size for f in (dest / "blobs/sha256").iterdir())
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    fw, fc = best["floor"]
    doc: dict[str, Any] = {"floor": {"wall": round(fw, 1), "cpu": round(fc, 1)}}
    for comp in ("zstd", "zstd:chunked"):
        w, c = best[comp]
        doc[comp] = {"wall": round(w, 1), "cpu": round(c, 1), "x_floor_wall": round(w / fw, 2),
                     "x_floor_cpu": round(c / fc, 2), "image_bytes": sizes[comp]}
    doc["runs"] = {k: [[round(w, 1), round(c, 1)] for w, c in v] for k, v in runs.items()}
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--budget", type=int, action="append")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the speed runs, added to an existing partialpull.json")
    ap.add_argument("--repeat", type=int, default=2, help="speed runs of each (best kept)")
    args = ap.parse_args(argv)
    work, out = args.work.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (work / "debian-new.rootfs").is_dir():
        raise SystemExit(f"{work}: no corpus; run: sudo python3 bench/corpus.py --out {work}")
    result = out / "partialpull.json"
    if args.speed_only:
        doc: dict[str, Any] = json.loads(result.read_text())
    else:
        log("content floor")
        floor = content_floor(work)
        doc = {"floor": floor, "budgets": {}}
        for budget in args.budget or [64, 40]:
            doc["budgets"][str(budget)] = budget_run(budget, work, out, floor["bytes"])
        doc["skopeo_as_built"] = skopeo_as_built(work, out)
    if not args.no_speed:
        doc["speed"] = speed(work, out, args.repeat)
        doc["load_average"] = os.getloadavg()
    result.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
