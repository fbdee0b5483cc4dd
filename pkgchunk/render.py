"""Presentation, in one place: every table, every ``--json`` document, every text report.

The pipeline modules return frozen results and never format them; the CLI picks one of
the functions here and prints what it returns. JSON schemas are documented in
docs/json.md, so a change to a ``*_json`` function is a change to that document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pkgchunk.pkgdb.model import Ownership
from pkgchunk.pkgdb.ownership import owned_paths
from pkgchunk.tree import FileTree, encode_path, parent

if TYPE_CHECKING:  # types only: the pipeline modules import nothing from here
    from pkgchunk.diff import DiffResult, GroupChange
    from pkgchunk.oci.write import WriteResult
    from pkgchunk.rechunk import Planned, RechunkResult
    from pkgchunk.verify import VerifyResult


def human_size(n: float) -> str:
    """Binary units, one decimal (``512 B``, ``1.5 MiB``); also rates (progress)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- packages

#: How many of the directories with the most unowned bytes are listed.
TOP_DIRS = 10


@dataclass(frozen=True, slots=True)
class PackageRow:
    name: str
    epoch: int | None
    version: str
    release: str
    arch: str
    source: str
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class DirRow:
    """Unowned paths whose parent is ``path`` (absolute, '/' for the root)."""

    path: str
    bytes: int
    files: int


@dataclass(frozen=True, slots=True)
class PackagesReport:
    databases: tuple[tuple[str, str], ...]  # (format, absolute path)
    packages: tuple[PackageRow, ...]
    unowned_files: int
    unowned_bytes: int
    largest_dirs: tuple[DirRow, ...]
    pkgdb_files: int
    pkgdb_bytes: int
    warnings: tuple[str, ...]


def _abs(path: str) -> str:
    return "/" + path


def packages_report(tree: FileTree, ownership: Ownership) -> PackagesReport:
    """Tally the tree by owner (deterministic: rows sorted, dirs by bytes then path)."""
    owned = owned_paths(ownership)
    rows: list[PackageRow] = []
    for key, paths in owned.items():
        pkg = ownership.packages[key]
        size = 0
        for p in paths:
            e = tree.entries[p]
            if e.kind == "reg":
                size += e.size
        rows.append(
            PackageRow(
                name=pkg.name,
                epoch=pkg.epoch,
                version=pkg.version,
                release=pkg.release,
                arch=pkg.arch,
                source=pkg.source,
                files=len(paths),
                bytes=size,
            )
        )
    rows.sort(
        key=lambda r: (r.name, r.arch, -1 if r.epoch is None else r.epoch, r.version, r.release)
    )
    dirs: dict[str, list[int]] = {}
    unowned_files = unowned_bytes = db_files = db_bytes = 0
    for path, entry in tree.entries.items():
        size = entry.size if entry.kind == "reg" else 0
        if path in ownership.pkgdb_paths:
            db_files += 1
            db_bytes += size
        elif path not in ownership.owners:
            unowned_files += 1
            unowned_bytes += size
            tally = dirs.setdefault(parent(path), [0, 0])
            tally[0] += size
            tally[1] += 1
    top = sorted(dirs.items(), key=lambda kv: (-kv[1][0], -kv[1][1], encode_path(kv[0])))[:TOP_DIRS]
    return PackagesReport(
        databases=tuple(sorted((db.format, _abs(db.path)) for db in ownership.dbs)),
        packages=tuple(rows),
        unowned_files=unowned_files,
        unowned_bytes=unowned_bytes,
        largest_dirs=tuple(DirRow(_abs(d), b, n) for d, (b, n) in top),
        pkgdb_files=db_files,
        pkgdb_bytes=db_bytes,
        warnings=ownership.warnings,
    )


def packages_json(report: PackagesReport) -> dict[str, Any]:
    """The stable document of ``pkgchunk packages --json`` (schema: docs/json.md)."""
    return {
        "databases": [{"format": f, "path": p} for f, p in report.databases],
        "packages": [
            {
                "name": r.name,
                "epoch": r.epoch,
                "version": r.version,
                "release": r.release,
                "arch": r.arch,
                "source": r.source,
                "files": r.files,
                "bytes": r.bytes,
            }
            for r in report.packages
        ],
        "unowned": {
            "files": report.unowned_files,
            "bytes": report.unowned_bytes,
            "largest_dirs": [
                {"path": d.path, "bytes": d.bytes, "files": d.files} for d in report.largest_dirs
            ],
        },
    }


def _show(text: str) -> str:
    """A path printable on any terminal (undecodable bytes as \\x escapes)."""
    return encode_path(text).decode("utf-8", "backslashreplace")


def packages_table(report: PackagesReport) -> str:
    """A human table: one line per package, then the databases and the unowned summary."""
    head = ("NAME", "VERSION", "ARCH", "SOURCE", "FILES", "BYTES")
    lines: list[tuple[str, ...]] = [head]
    for r in report.packages:
        evr = f"{r.epoch}:" if r.epoch else ""
        evr += r.version + (f"-{r.release}" if r.release else "")
        lines.append((r.name, evr, r.arch, r.source, str(r.files), str(r.bytes)))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = []
    for row in lines:
        cells = [
            c.rjust(w) if i >= 4 else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    out.append("")
    if not report.databases:
        out.append("databases: none found (every path is unowned)")
    for fmt, path in report.databases:
        out.append(f"database: {fmt} {_show(path)}")
    out.append(f"package databases: {report.pkgdb_files} paths, {report.pkgdb_bytes} bytes")
    out.append(
        f"packages: {len(report.packages)}; unowned: {report.unowned_files} paths,"
        f" {report.unowned_bytes} bytes"
    )
    shown = [d for d in report.largest_dirs if d.bytes]
    if shown:
        out.append("largest unowned directories (bytes, paths, directory):")
    for d in shown:
        out.append(f"  {d.bytes:>12}  {d.files:>6}  {_show(d.path)}")
    return "\n".join(out)


# --------------------------------------------------------------------------- plan, rechunk

def plan_table(planned: Planned, result: WriteResult | None = None) -> str:
    """Layer, size, packages, change probability (and digest when written)."""
    rows = [("LAYER", "SIZE", "P(change)", "PACKAGES", "DIGEST")]
    written = {w.name: w for w in result.layers} if result is not None else {}
    for layer in planned.outcome.plan.layers:
        w = written.get(layer.name)
        size = human_size(w.size if w is not None else layer.bytes)
        pk = ",".join(layer.packages[:4]) + (
            f",+{len(layer.packages) - 4}" if len(layer.packages) > 4 else ""
        )
        digest = ""
        if w is not None:
            digest = w.digest.partition(":")[2][:12] + (" reused" if w.reused else "")
        rows.append((layer.name, size, f"{layer.change_probability:.2f}", pk or "-", digest))
    width = [min(max(len(r[i]) for r in rows), 48) for i in range(4)]
    lines = [
        f"{r[0][:48]:<{width[0]}}  {r[1]:>{width[1]}}  {r[2]:>{width[2]}}  "
        f"{r[3][:48]:<{width[3]}}  {r[4]}".rstrip()
        for r in rows
    ]
    total = sum(layer.bytes for layer in planned.outcome.plan.layers)
    lines.append(
        f"{len(planned.outcome.plan.layers)} layers, {human_size(total)} uncompressed,"
        f" rules {planned.rules_name}"
    )
    if result is not None:
        lines.append(f"{result.ref}: manifest {result.manifest_digest}")
    return "\n".join(lines)


def plan_json(planned: Planned) -> dict[str, Any]:
    return {
        "rules": planned.rules_name,
        "layers": [
            {
                "name": layer.name,
                "packages": list(layer.packages),
                "groups": list(layer.groups),
                "files": len(layer.paths),
                "bytes": layer.bytes,
                "change_probability": round(layer.change_probability, 6),
            }
            for layer in planned.outcome.plan.layers
        ],
    }


def rechunk_json(result: RechunkResult) -> dict[str, Any]:
    doc = plan_json(result.planned)
    written = {w.name: w for w in result.write.layers}
    for layer in doc["layers"]:
        w = written[layer["name"]]
        layer.update(
            digest=w.digest, diff_id=w.diff_id, compressed_bytes=w.size, reused=w.reused
        )
    doc.update(
        ref=result.write.ref,
        manifest_digest=result.write.manifest_digest,
        config_digest=result.write.config_digest,
        previous=result.previous,
        warnings=list(result.warnings),
    )
    return doc


# --------------------------------------------------------------------------- verify

def verify_json(a: str, b: str, result: VerifyResult) -> dict[str, Any]:
    return {
        "a": a,
        "b": b,
        "identical": result.identical,
        "paths": result.paths,
        "differences": [
            {"path": "/" + d.path if d.path else None, "what": d.what}
            for d in result.differences
        ],
    }


def verify_text(result: VerifyResult, limit: int = 20) -> str:
    """``identical: N paths``, or the first ``limit`` differences and how many more."""
    if result.identical:
        return f"identical: {result.paths} paths"
    shown = result.differences[:limit]
    lines = [str(d) for d in shown]
    more = len(result.differences) - len(shown)
    if more:
        lines.append(f"... and {more} more differences")
    return "\n".join(lines)


# --------------------------------------------------------------------------- diff

def diff_json(result: DiffResult) -> dict[str, object]:
    return {
        "old": result.old,
        "new": result.new,
        "pull_bytes": result.pull_bytes,
        "total_bytes": result.total_bytes,
        "docker_prefix_pull_bytes": result.prefix_pull_bytes,
        "layers": [
            {"name": lc.name, "digest": lc.digest, "bytes": lc.size, "pulled": lc.pulled}
            for lc in result.layers
        ],
        "changed_groups": [
            {"group": g.group, "old": g.old or None, "new": g.new or None, "layer": g.layer}
            for g in result.groups
        ],
    }


def diff_text(result: DiffResult) -> str:
    """The human report: each layer of NEW (pulled or held), what changed in which
    layer, and the total a client pulls."""
    lines = [f"{result.old} -> {result.new}"]
    by_layer: dict[str, list[GroupChange]] = {}
    for g in result.groups:
        by_layer.setdefault(g.layer, []).append(g)
    for lc in result.layers:
        mark = "pull" if lc.pulled else "have"
        lines.append(f"{mark}  {human_size(lc.size):>10}  {lc.name}")
        for g in by_layer.pop(lc.name, []):
            lines.append("      " + _change_text(g))
    for g in (g for changes in by_layer.values() for g in changes):
        lines.append("      " + _change_text(g))  # removed with its layer
    share = 100.0 * result.pull_bytes / result.total_bytes if result.total_bytes else 0.0
    lines.append(
        f"pull {human_size(result.pull_bytes)} of {human_size(result.total_bytes)} ({share:.1f}%),"
        f" {sum(lc.pulled for lc in result.layers)} of {len(result.layers)} layers;"
        f" Docker classic store: {human_size(result.prefix_pull_bytes)}"
    )
    return "\n".join(lines)


def _change_text(g: GroupChange) -> str:
    if not g.old:
        return f"+ {g.group} {g.new} (new)"
    if not g.new:
        return f"- {g.group} {g.old} (removed)"
    return f"~ {g.group} {g.old} -> {g.new}"
