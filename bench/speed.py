#!/usr/bin/env python3
"""pkgchunk's speed and memory against the floor, measured side by side in one run.

    python3 bench/speed.py              # real Debian image + synthetic 50k-200k file images
    python3 bench/speed.py --quick      # seconds: a tiny synthetic image (CI smoke test)
    python3 bench/speed.py --no-synth --repeat 1   # the real image only, once

Every repetition runs, in this order: the floor (decompress each input layer with
``gzip -dc``/``zstd -dc``; ``tar -C ROOTFS -cf - . | pigz -pN`` and ``| zstd -TN``), cold
``pkgchunk rechunk`` (gzip, zstd: a new DEST, nothing to reuse but the input's own blobs),
warm rebuilds (same input, ``--prev`` the cold output, a new DEST: every blob must be
reused) and ``rootfs:`` input. Times are wall clock, CPU and peak RSS come from ``wait4``
(what ``/usr/bin/time -v`` reports). Ratios are taken within a repetition, then the median
over repetitions. The synthetic images (``synthimage.py``) measure how peak RSS grows with
the number of files and with their size.

Writes ``OUT/speed.json`` and ``OUT/speed.md`` and prints the tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import synthimage  # noqa: E402


def log(msg: str) -> None:
    print(f"[speed {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """One measured command."""

    name: str
    wall: float
    user: float
    sys: float
    maxrss_mb: float
    rc: int
    extra: dict[str, Any]


def timed(name: str, cmd: list[str] | str, *, env: dict[str, str] | None = None,
          stdout: Path | None = None, cwd: Path | None = None) -> Run:
    """Run ``cmd`` (a shell string runs under bash, so a pipeline counts all its processes)."""
    argv = ["bash", "-o", "pipefail", "-c", cmd] if isinstance(cmd, str) else cmd
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd)
        assert p.stderr is not None
        err = p.stderr.read()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if stdout:
            out.close()  # type: ignore[union-attr]
    if p.returncode != 0:
        shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
        raise SystemExit(f"{name}: {shown} failed ({p.returncode}): {err.decode()[-2000:]}")
    return Run(name, wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss / 1024, 0, {})


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Subject:
    """The image under test: an OCI layout (tag ``latest``) and the same files as a directory."""

    label: str
    layout: Path
    rootfs: Path

    @property
    def ref(self) -> str:
        return f"oci:{self.layout}:latest"


def layer_blobs(layout: Path) -> list[tuple[Path, str]]:
    """(blob path, 'gzip'|'zstd'|'tar') of the image's layers, bottom first."""
    index = json.loads((layout / "index.json").read_text())
    m = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / m).read_text())
    out = []
    for layer in manifest["layers"]:
        path = layout / "blobs" / "sha256" / layer["digest"].split(":")[1]
        with open(path, "rb") as f:
            head = f.read(4)
        kind = "tar"
        if head[:2] == b"\x1f\x8b":
            kind = "gzip"
        elif head == b"\x28\xb5\x2f\xfd":
            kind = "zstd"
        out.append((path, kind))
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])

    def version(tool: str, arg: str = "--version") -> str:
        try:
            r = subprocess.run([tool, arg], capture_output=True, text=True, check=False)
        except OSError:
            return "missing"
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else ""

    import zlib

    import zstandard

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "zstandard": zstandard.__version__,
        "pigz": version("pigz"),
        "zstd": version("zstd", "-V"),
        "loadavg_start": os.getloadavg(),
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
    }


# ---------------------------------------------------------------- the measured commands


class Bench:
    def __init__(self, scratch: Path, trees: dict[str, Path], jobs: int) -> None:
        self.scratch = scratch
        self.trees = trees
        self.jobs = jobs

    def env(self, tree: str) -> dict[str, str]:
        """Run ``tree``'s pkgchunk: ``python -m`` would put the working directory first on
        sys.path (a checkout's own pkgchunk), so that is turned off and the scratch
        directory is the working directory."""
        return {**os.environ, "PYTHONPATH": str(self.trees[tree]), "PYTHONSAFEPATH": "1"}

    def pkgchunk(self, tree: str, name: str, args: list[str], dest: Path) -> Run:
        """``pkgchunk rechunk --json ARGS oci:DEST:x`` from source tree ``tree``."""
        shutil.rmtree(dest, ignore_errors=True)
        out = self.scratch / "stdout.json"
        cmd = [sys.executable, "-m", "pkgchunk.cli", "rechunk", "--json", *args, f"oci:{dest}:x"]
        r = timed(name, cmd, env=self.env(tree), stdout=out, cwd=self.scratch)
        doc = json.loads(out.read_text())
        r.extra = {
            "manifest": doc["manifest_digest"],
            "layers": len(doc["layers"]),
            "reused": sum(1 for lay in doc["layers"] if lay["reused"]),
            "compressed_bytes": sum(lay["compressed_bytes"] for lay in doc["layers"]),
            "command": "pkgchunk rechunk " + shlex.join([*args, f"oci:{dest.name}:x"]),
        }
        return r

    def floor_decompress(self, subject: Subject) -> Run:
        tools = {"gzip": "gzip -dc", "zstd": "zstd -dcq", "tar": "cat"}
        cmd = "; ".join(f"{tools[k]} {shlex.quote(str(p))} >/dev/null"
                        for p, k in layer_blobs(subject.layout))
        r = timed("floor: decompress layers", cmd)
        r.extra = {"command": cmd.replace(str(subject.layout), subject.layout.name)}
        return r

    def floor_tar(self, subject: Subject, compression: str) -> Run:
        comp = f"pigz -p{self.jobs}" if compression == "gzip" else f"zstd -T{self.jobs} -3 -q"
        cmd = f"tar -C {shlex.quote(str(subject.rootfs))} -cf - . | {comp} >/dev/null"
        r = timed(f"floor: tar | {comp}", cmd)
        r.extra = {"command": cmd.replace(str(subject.rootfs), subject.rootfs.name)}
        return r


def measure_real(bench: Bench, subject: Subject, repeat: int) -> dict[str, Any]:
    """Interleaved repetitions of the floor and every pkgchunk mode, on ``subject``."""
    reps: list[dict[str, dict[str, Any]]] = []
    s = bench.scratch
    for rep in range(repeat):
        runs: dict[str, Run] = {}
        log(f"{subject.label}: repetition {rep + 1}/{repeat}")
        for comp in ("gzip", "zstd"):
            # Each tree right after the others and next to its floor: the load of a shared
            # machine changes by the minute, and ratios must compare like with like.
            runs[f"floor_decompress_{comp}"] = bench.floor_decompress(subject)
            runs[f"floor_tar_{comp}"] = bench.floor_tar(subject, comp)
            for tree in bench.trees:
                runs[f"{tree}:cold_{comp}"] = bench.pkgchunk(
                    tree, f"cold {comp}", ["--compression", comp, subject.ref],
                    s / f"cold-{tree}-{comp}")
            for tree in bench.trees:
                runs[f"{tree}:warm_{comp}"] = bench.pkgchunk(
                    tree, f"warm {comp}",
                    ["--compression", comp, "--prev", f"oci:{s / f'cold-{tree}-{comp}'}:x",
                     subject.ref],
                    s / f"warm-{tree}-{comp}")
            for tree in bench.trees:
                runs[f"{tree}:rootfs_{comp}"] = bench.pkgchunk(
                    tree, f"rootfs {comp}",
                    ["--compression", comp, f"rootfs:{subject.rootfs}"],
                    s / f"rootfs-{tree}-{comp}")
        for k, r in runs.items():
            log(f"  {k:28s} {r.wall:7.2f} s  cpu {r.user + r.sys:7.2f} s"
                f"  rss {r.maxrss_mb:6.1f} MB")
        reps.append({k: asdict(r) for k, r in runs.items()})
    return {"label": subject.label, "repetitions": reps, "summary": summarize(reps, bench)}


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def summarize(reps: list[dict[str, dict[str, Any]]], bench: Bench) -> dict[str, Any]:
    """Medians of times and of per-repetition ratios, plus the reproducibility checks."""

    def wall(rep: dict[str, dict[str, Any]], key: str) -> float:
        return float(rep[key]["wall"])

    def cpu(rep: dict[str, dict[str, Any]], key: str) -> float:
        return float(rep[key]["user"] + rep[key]["sys"])

    out: dict[str, Any] = {"trees": {}}
    for comp in ("gzip", "zstd"):
        out[f"floor_decompress_{comp}"] = _med([wall(r, f"floor_decompress_{comp}") for r in reps])
        out[f"floor_tar_{comp}"] = _med([wall(r, f"floor_tar_{comp}") for r in reps])
    for tree in bench.trees:
        t: dict[str, Any] = {}
        for comp in ("gzip", "zstd"):
            floor = [wall(r, f"floor_decompress_{comp}") + wall(r, f"floor_tar_{comp}")
                     for r in reps]
            for mode in ("cold", "warm", "rootfs"):
                key = f"{tree}:{mode}_{comp}"
                t[f"{mode}_{comp}"] = {
                    "wall": _med([wall(r, key) for r in reps]),
                    "cpu": _med([r[key]["user"] + r[key]["sys"] for r in reps]),
                    "maxrss_mb": max(r[key]["maxrss_mb"] for r in reps),
                    "manifests": sorted({r[key]["extra"]["manifest"] for r in reps}),
                    "layers": reps[0][key]["extra"]["layers"],
                    "reused": min(r[key]["extra"]["reused"] for r in reps),
                    "compressed_bytes": reps[0][key]["extra"]["compressed_bytes"],
                    "command": reps[0][key]["extra"]["command"],
                }
            t[f"cold_{comp}"]["x_floor"] = _med(
                [wall(r, f"{tree}:cold_{comp}") / f for r, f in zip(reps, floor, strict=True)])
            t[f"cold_{comp}"]["cpu_x_floor"] = _med(
                [cpu(r, f"{tree}:cold_{comp}")
                 / (cpu(r, f"floor_decompress_{comp}") + cpu(r, f"floor_tar_{comp}"))
                 for r in reps])
            t[f"warm_{comp}"]["x_cold"] = _med(
                [wall(r, f"{tree}:warm_{comp}") / wall(r, f"{tree}:cold_{comp}") for r in reps])
            t[f"rootfs_{comp}"]["x_floor"] = _med(
                [wall(r, f"{tree}:rootfs_{comp}") / wall(r, f"floor_tar_{comp}") for r in reps])
            t[f"cold_{comp}"]["reproducible"] = len(t[f"cold_{comp}"]["manifests"]) == 1
            warm = t[f"warm_{comp}"]
            warm["all_reused"] = warm["reused"] == warm["layers"]
        out["trees"][tree] = t
    return out


# ---------------------------------------------------------------- where the time goes

#: (category, leaf functions): a sample whose innermost Python frame is one of these.
LEAF_CATEGORIES = [
    ("compression (zlib, zstd)", {"_Gzip.write", "_Gzip.close", "_Zstd.write", "_Zstd.close"}),
    ("decompressing the input layers", {"_gunzip", "_unzstd"}),
    ("sha256 (blob digests, diff_ids)", {"HashingSink.write", "HashingReader.read",
                                         "copy_hashing", "HashingReader.drain"}),
    ("spooling: diff_id + writing the uncompressed tar", {"_Pipe._run", "spool", "_spool"}),
    ("reading file contents (pread)", {"_Sources.copy"}),
    ("writing and fsyncing blobs", {"_write_one", "BlobStore.commit", "BlobStore.copy_in",
                                    "BlobStore.put_bytes"}),
    ("waiting (queues, thread joins)", {"Condition.wait", "Thread.join", "Queue.get",
                                        "Queue.put", "wait"}),
]
#: (category, function): otherwise, the innermost of these on the stack.
STACK_CATEGORIES = [
    ("tar headers and members (Python)", "write_layer"),
    ("flattening the layers (tar parsing)", "flatten"),
    ("package databases and ownership", "collect"),
    ("mtime policy", "apply"),
    ("planner", "plan_layers"),
    ("reading a rootfs: directory", "read_rootfs"),
    ("start-up (imports)", "_find_and_load"),
]


def categorize(stack: list[str]) -> str:
    """The category of one py-spy sample (frames outermost first, as 'func (file:line)')."""
    names = [f.split(" (", 1)[0] for f in stack]
    if names:
        for category, leaves in LEAF_CATEGORIES:
            if names[-1] in leaves:
                return category
    for name in reversed(names):
        for category, func in STACK_CATEGORIES:
            if name == func:
                return category
    return "other"


def profile(bench: Bench, subject: Subject) -> dict[str, Any] | None:
    """Thread-seconds per category for a cold rechunk, gzip and zstd (py-spy, 100 Hz)."""
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        log("py-spy not installed (pip install py-spy): no profile")
        return None
    tree = next(iter(bench.trees))
    out: dict[str, Any] = {}
    for comp in ("gzip", "zstd"):
        raw = bench.scratch / f"profile-{comp}.txt"
        dest = bench.scratch / "profile-out"
        shutil.rmtree(dest, ignore_errors=True)
        cmd = [pyspy, "record", "-r", "100", "-f", "raw", "--threads", "-o", str(raw), "--",
               sys.executable, "-m", "pkgchunk.cli", "rechunk", "--compression", comp,
               subject.ref, f"oci:{dest}:x"]
        log(f"profiling cold {comp}")
        r = timed(f"profile {comp}", cmd, env=bench.env(tree), cwd=bench.scratch)
        shutil.rmtree(dest, ignore_errors=True)
        counts: dict[str, int] = {}
        for line in raw.read_text().splitlines():
            stack_text, _, n = line.rpartition(" ")
            if not stack_text:
                continue
            cat = categorize(stack_text.split(";")[1:])  # [0] names the thread
            counts[cat] = counts.get(cat, 0) + int(n)
        total = sum(counts.values())
        out[comp] = {
            "wall": r.wall,
            "thread_seconds": total / 100,
            "categories": dict(sorted(((k, v / 100) for k, v in counts.items()),
                                      key=lambda kv: -kv[1])),
        }
    return out


# ---------------------------------------------------------------- memory scaling


def measure_synth(bench: Bench, work: Path, specs: list[synthimage.Spec],
                  keep: bool) -> dict[str, Any]:
    """Peak RSS of a cold zstd rechunk per synthetic image, and bytes per file."""
    rows = []
    tree = next(iter(bench.trees))
    for spec in specs:
        layout = work / spec.name
        log(f"synthetic {spec.name}: building")
        t0 = time.perf_counter()
        synthimage.build(layout, spec)
        built = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
        log(f"synthetic {spec.name}: {size / 1e9:.2f} GB in {built:.0f} s; rechunking")
        r = bench.pkgchunk(tree, spec.name, ["--compression", "zstd", f"oci:{layout}:latest"],
                           bench.scratch / "synth-out")
        shutil.rmtree(bench.scratch / "synth-out", ignore_errors=True)
        log(f"  {r.wall:.1f} s, cpu {r.user + r.sys:.1f} s, rss {r.maxrss_mb:.1f} MB")
        rows.append({"files": spec.files, "file_bytes": spec.file_bytes,
                     "image_bytes": spec.files * spec.file_bytes, "blob_bytes": size,
                     "wall": r.wall, "cpu": r.user + r.sys, "maxrss_mb": r.maxrss_mb,
                     "layers": r.extra["layers"], "command": r.extra["command"]})
        if not keep:
            shutil.rmtree(layout, ignore_errors=True)
    return {"rows": rows, **_per_file(rows)}


def _per_file(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares RSS = a + b * files over the rows of the most common file size."""
    by_size: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_size.setdefault(r["file_bytes"], []).append(r)
    base = max(by_size.values(), key=len)
    out: dict[str, Any] = {}
    if len(base) >= 2:
        xs = [r["files"] for r in base]
        ys = [r["maxrss_mb"] * 1024 * 1024 for r in base]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs)
        out["bytes_per_file"] = b
        out["fixed_mb"] = (my - b * mx) / 1024 / 1024
    for r in rows:
        same = [o for o in base if o["files"] == r["files"] and o is not r]
        if r["file_bytes"] != base[0]["file_bytes"] and same:
            out["bigger_files_delta_mb"] = r["maxrss_mb"] - same[0]["maxrss_mb"]
            out["bigger_files"] = (
                f"{r['files']} files x {r['file_bytes']} B vs x {same[0]['file_bytes']} B")
    return out


# ---------------------------------------------------------------- report


def _s(x: float) -> str:
    return f"{x:.1f} s" if x >= 10 else f"{x:.2f} s"


def _zstd_version(text: str) -> str:
    found = re.search(r"v(\d+\.\d+\.\d+)", text)
    return found.group(1) if found else text


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def tables(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Linux {m['kernel']},"
        f" Python {m['python']}, zlib {m['zlib']}, zstandard {m['zstandard']}, {m['pigz']},"
        f" zstd {_zstd_version(m['zstd'])};"
        f" {m['date']}, commit {m['commit']}, load average at start"
        f" {m['loadavg_start'][0]:.2f}. Median of {doc['repeat']} interleaved repetitions.",
        "",
    ]
    real = doc.get("real")
    if real:
        s = real["summary"]
        lines += [
            f"**{real['label']}**. Floor: decompress the input layers"
            f" {_s(s['floor_decompress_gzip'])}, then `tar | pigz -p{doc['jobs']}`"
            f" {_s(s['floor_tar_gzip'])} or `tar | zstd -T{doc['jobs']}`"
            f" {_s(s['floor_tar_zstd'])}.",
            "",
            "| pkgchunk | run | wall | CPU | peak RSS | ratio (wall) | target | check |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for comp in ("gzip", "zstd"):
            for mode in ("cold", "warm", "rootfs"):
                for tree, t in s["trees"].items():
                    r = t[f"{mode}_{comp}"]
                    head = f"| {tree} | {mode if mode != 'rootfs' else '`rootfs:`'}, {comp} |"
                    head += f" {_s(r['wall'])} | {_s(r['cpu'])} | {r['maxrss_mb']:.0f} MB |"
                    if mode == "cold":
                        floor = s[f"floor_decompress_{comp}"] + s[f"floor_tar_{comp}"]
                        digests = ("same digest every run" if r["reproducible"]
                                   else "DIGESTS DIFFER")
                        lines.append(
                            f"{head} {r['x_floor']:.2f}x floor ({_s(floor)}; CPU"
                            f" {r['cpu_x_floor']:.2f}x) | ≤ 1.3x, ≤ 200 MB |"
                            f" {r['layers']} layers, {digests} |")
                    elif mode == "warm":
                        lines.append(f"{head} {r['x_cold']:.2f}x cold | ≤ 0.3x |"
                                     f" {r['reused']}/{r['layers']} blobs reused |")
                    else:
                        tool = "pigz" if comp == "gzip" else "zstd"
                        lines.append(f"{head} {r['x_floor']:.2f}x `tar \\| {tool}` | – | |")
        lines.append("")
    prof = doc.get("profile")
    if prof:
        cats: list[str] = []
        for p in prof.values():
            cats += [c for c in p["categories"] if c not in cats]
        lines += [
            "Where the time goes in a cold rechunk (py-spy, 100 Hz, every thread; seconds of"
            " thread time, so on 2 cores they add up to more than the wall time):",
            "",
            "| | " + " | ".join(f"{comp} (wall {_s(p['wall'])})" for comp, p in prof.items())
            + " |",
            "|---|" + "---|" * len(prof),
        ]
        for c in cats:
            cells = []
            for p in prof.values():
                v = p["categories"].get(c, 0.0)
                cells.append(f"{v:.1f} s ({100 * v / p['thread_seconds']:.0f} %)")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("| total | " + " | ".join(f"{p['thread_seconds']:.1f} s"
                                               for p in prof.values()) + " |")
        lines.append("")
    synth = doc.get("synth")
    if synth:
        lines += [
            "Synthetic images (`bench/synthimage.py`: two uncompressed layers, a dpkg database,"
            " packages of 100 files on average), cold `pkgchunk rechunk --compression zstd`:",
            "",
            "| files | bytes per file | image | wall | CPU | peak RSS |",
            "|---|---|---|---|---|---|",
        ]
        for r in synth["rows"]:
            lines.append(
                f"| {r['files']:,} | {r['file_bytes']:,} | {_gb(r['image_bytes'])} |"
                f" {_s(r['wall'])} | {_s(r['cpu'])} | {r['maxrss_mb']:.0f} MB |")
        lines.append("")
        if "bytes_per_file" in synth:
            lines.append(
                f"Peak RSS ≈ {synth['fixed_mb']:.0f} MB + {synth['bytes_per_file']:.0f} bytes"
                " per file (least squares over the file counts)"
                + (f"; doubling the file size ({synth['bigger_files']}) changes it by"
                   f" {synth['bigger_files_delta_mb']:+.0f} MB."
                   if "bigger_files_delta_mb" in synth else "."))
            lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def quick_subject(scratch: Path) -> Subject:
    spec = synthimage.Spec(400, 3000, "gzip")
    layout = synthimage.build(scratch / "quick-image", spec)
    root = synthimage.unpack(layout, scratch / "quick-image.rootfs")
    return Subject("quick synthetic image (400 files)", layout, root)


def parse_tree(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not Path(path, "pkgchunk").is_dir():
        raise argparse.ArgumentTypeError(f"{text}: want NAME=DIR with DIR/pkgchunk")
    return name, Path(path).resolve()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny image, once (CI smoke test)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--image", default="debian-new", help="OCI layout under --work (+ .rootfs)")
    ap.add_argument("--tree", action="append", type=parse_tree, default=[],
                    metavar="NAME=DIR", help="pkgchunk source tree(s) to compare"
                    " [default: this checkout]")
    ap.add_argument("--no-real", action="store_true", help="skip the real image")
    ap.add_argument("--no-synth", action="store_true", help="skip the synthetic images")
    ap.add_argument("--synth-files", default="50000,100000,200000")
    ap.add_argument("--synth-bytes", type=int, default=25_000)
    ap.add_argument("--profile", action="store_true",
                    help="also profile a cold gzip and zstd rechunk with py-spy")
    ap.add_argument("--keep-synth", action="store_true", help="keep the synthetic layouts")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="threads for pigz/zstd in the floor")
    a = ap.parse_args()
    out = a.out or (HERE / "out" / ("quick" if a.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    trees = dict(a.tree) or {"pkgchunk": REPO}
    for tool in ("pigz", "zstd", "gzip", "tar"):
        if shutil.which(tool) is None:
            raise SystemExit(f"speed.py needs {tool}")
    doc: dict[str, Any] = {"machine": machine(), "jobs": a.jobs, "trees": {k: str(v) for k, v in
                                                                          trees.items()}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pkgchunk-speed-", dir=out) as tmp:
        scratch = Path(tmp)
        bench = Bench(scratch, trees, a.jobs)
        for name, path in trees.items():  # each tree really runs its own pkgchunk
            where = subprocess.run(
                [sys.executable, "-c", "import pkgchunk; print(pkgchunk.__file__)"],
                env=bench.env(name), cwd=scratch, capture_output=True, text=True, check=True,
            ).stdout.strip()
            if not Path(where).resolve().is_relative_to(path):
                raise SystemExit(f"--tree {name}={path}: python imports {where} instead")
        if a.quick:
            doc["repeat"] = 2  # two, so the reproducibility check compares something
            subject = quick_subject(scratch)
            doc["real"] = measure_real(bench, subject, 2)
            if a.profile:
                doc["profile"] = profile(bench, subject)
            specs = [synthimage.Spec(n, 2000) for n in (300, 600, 1200)] + [
                synthimage.Spec(600, 4000)]
            doc["synth"] = measure_synth(bench, scratch, specs, keep=False)
        else:
            doc["repeat"] = a.repeat
            if not a.no_real:
                layout = a.work / a.image
                rootfs = a.work / f"{a.image}.rootfs"
                if not (layout / "index.json").is_file() or not rootfs.is_dir():
                    raise SystemExit(f"{layout}: missing; build it: sudo python3 bench/corpus.py")
                subject = Subject(f"{a.image} (real Debian 12 image)", layout, rootfs)
                doc["real"] = measure_real(bench, subject, a.repeat)
                if a.profile:
                    doc["profile"] = profile(bench, subject)
            if not a.no_synth:
                counts = [int(x) for x in a.synth_files.split(",") if x]
                specs = [synthimage.Spec(n, a.synth_bytes) for n in counts]
                mid = counts[len(counts) // 2]
                specs.append(synthimage.Spec(mid, 2 * a.synth_bytes))
                doc["synth"] = measure_synth(bench, a.work, specs, keep=a.keep_synth)
    doc["machine"]["loadavg_end"] = os.getloadavg()
    doc["seconds"] = time.perf_counter() - t0
    md = tables(doc)
    (out / "speed.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "speed.md").write_text(md + "\n")
    print(md)
    log(f"done in {doc['seconds']:.0f} s: {out / 'speed.json'}")


if __name__ == "__main__":
    main()
