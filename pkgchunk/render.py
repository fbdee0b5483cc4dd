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
from pkgchunk.progress import human_size as human_size  # one formatter for both outputs
from pkgchunk.tree import FileTree, encode_path, parent

if TYPE_CHECKING:  # types only: the pipeline modules import nothing from here
    from collections.abc import Sequence

    from pkgchunk.diff import DiffResult, GroupChange
    from pkgchunk.oci.store import Garbage
    from pkgchunk.oci.write import WriteResult
    from pkgchunk.rechunk import Planned, RechunkResult
    from pkgchunk.rulescheck import RulesCheck
    from pkgchunk.verify import VerifyResult

#: Width a name list in a table cell grows to before the rest is counted (``+N more``).
LIST_WIDTH = 48


def name_list(names: Sequence[str], width: int | None = LIST_WIDTH) -> str:
    """``a,b,c,+N more``: whole names while they fit in ``width``, then the count of the
    rest, so a cell is never cut silently or mid-name. ``width=None``: every name."""
    if not names:
        return "-"
    if width is None:
        return ",".join(names)
    shown: list[str] = []
    used = 0
    for i, name in enumerate(names):
        rest = len(names) - i - 1
        tail = len(f",+{rest} more") if rest else 0
        cost = len(name) + (1 if shown else 0)
        if shown and used + cost + tail > width:
            break
        shown.append(name)
        used += cost
    more = len(names) - len(shown)
    return ",".join(shown) + (f",+{more} more" if more else "")


def _table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Columns padded to their widest cell (the last one unpadded), ``right`` aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            c if i == len(row) - 1 else c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


# --------------------------------------------------------------------------- rules

def rules_check_text(check: RulesCheck, verbose: bool = False) -> str:
    """The rules file's summary; with an image, what each group and bucket took."""
    r = check.rules
    base = f" (extends {' -> '.join(r.extends)})" if r.extends else ""
    lines = [
        f"{r.source}: valid{base}; {len(r.groups)} groups, {len(r.buckets)} buckets,"
        f" max_layers {r.max_layers}, group_by {r.group_by},"
        f" big_file_threshold {human_size(r.big_file_threshold)}"
        + (f", patch_layers {r.patch_layers}" if r.patch_layers else "")
    ]
    if check.image is None:
        return "\n".join(lines)
    rows = [("RULE", "FROM", "PATHS", "UNCOMPRESSED", "PACKAGES")]
    for m in check.matches:
        origin = m.origin.rpartition("/")[2]
        taken = name_list(m.packages, None if verbose else LIST_WIDTH)
        if not m.paths:
            taken = "- (matches nothing)"
        elif m.kind == "bucket":
            taken = "-"
        rows.append((f"{m.kind}/{m.name}", origin, str(m.paths), human_size(m.bytes), taken))
    lines.append(f"in {check.image}:")
    lines += _table(rows, right=(2, 3))
    return "\n".join(lines)


def rules_check_json(check: RulesCheck) -> dict[str, Any]:
    r = check.rules
    return {
        "rules": r.source,
        "extends": list(r.extends),
        "max_layers": r.max_layers,
        "group_by": r.group_by,
        "big_file_threshold": r.big_file_threshold,
        "patch_layers": r.patch_layers,
        "image": check.image,
        "matches": [
            {"kind": m.kind, "name": m.name, "origin": m.origin, "packages": list(m.packages),
             "paths": m.paths, "bytes": m.bytes}
            for m in check.matches
        ],
        "warnings": list(check.warnings),
    }


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

#: One line each for what the plan table's names and columns mean (the demo prints them).
PLAN_LEGEND = (
    "src/NAME     the packages built from source package NAME (pkg/NAME: one package)",
    "rule/NAME    a group of the rules file (docs/rules.md)",
    "bucket/NAME  files no package owns, by path; pkgdb: the package databases",
    "+N           N more groups merged into the layer; CONTENTS lists them (-v: all)",
    "P(change)    estimated chance that the layer changes in the next update",
    "reused       byte-identical to the previous build's layer: not pulled again",
)


def _contents(planned: Planned, layer_groups: Sequence[str], packages: Sequence[str],
              width: int | None) -> str:
    kinds = {g.key: g.kind for g in planned.outcome.groups}
    other = [k for k in layer_groups if kinds.get(k, "package") != "package"]
    return name_list([*packages, *other], width)


#: The narrowest CONTENTS column a terminal's width may squeeze the table to.
MIN_LIST_WIDTH = 20


def plan_table(planned: Planned, result: WriteResult | None = None, *,
               verbose: bool = False, columns: int | None = None) -> str:
    """One row per layer: name (+ merged groups), sizes, change probability, digest when
    written, contents; then the totals. Sizes say which: uncompressed (the tar) or
    compressed (the blob). Names are never cut: lists end in ``+N more`` (``verbose``:
    every name). ``columns``: a terminal's width, which the CONTENTS lists then fit
    (else they stop at LIST_WIDTH characters, the same in every pipe)."""
    layers = planned.outcome.plan.layers
    written = {w.name: w for w in result.layers} if result is not None else {}
    head = ["LAYER", "UNCOMPRESSED", "P(change)"]
    if result is not None:
        head = ["LAYER", "UNCOMPRESSED", "COMPRESSED", "P(change)", "DIGEST"]
    rows = [head]
    for layer in layers:
        name = layer.name + (f" +{len(layer.groups) - 1}" if len(layer.groups) > 1 else "")
        prob = f"{layer.change_probability:.2f}"
        w = written.get(layer.name)
        if w is None:
            rows.append([name, human_size(layer.bytes), prob])
        else:
            digest = w.digest.partition(":")[2][:12] + (" reused" if w.reused else "")
            rows.append([name, human_size(layer.bytes), human_size(w.size), prob, digest])
    width: int | None = LIST_WIDTH
    if verbose:
        width = None
    elif columns is not None:
        used = sum(max(len(r[i]) for r in rows) + 2 for i in range(len(head)))
        width = max(MIN_LIST_WIDTH, columns - used - 1)
    rows[0].append("CONTENTS")
    for row, layer in zip(rows[1:], layers, strict=True):
        row.append(_contents(planned, layer.groups, layer.packages, width))
    rows[1:1] = _base_rows(planned, result is not None)
    lines = _table(rows, right=(1, 2, 3) if result is not None else (1, 2))
    total = human_size(sum(layer.bytes for layer in layers))
    kind = "layer of the previous build" if planned.patched else "base layer"
    above = f" above {_count(len(planned.base), kind)}" if planned.base else ""
    if result is None:
        lines.append(f"{_count(len(layers), 'layer')}{above}, {total} uncompressed,"
                     f" rules {planned.rules_name}")
    else:
        packed = human_size(sum(w.size for w in result.layers))
        kinds = sorted({_compression(w.media_type) for w in result.layers}) or ["none"]
        reused = sum(w.reused and not w.base for w in result.layers)
        lines.append(
            f"{_count(len(layers), 'layer')}{above}, {total} uncompressed, {packed} compressed"
            f" ({'/'.join(kinds)}), {reused} reused, rules {planned.rules_name}"
        )
        lines.append(f"{result.ref}: manifest {result.manifest_digest}")
    for split in planned.outcome.splits:
        lines.append(f"split {split.group}: {split.reason()}")
    return "\n".join(lines)


def _base_rows(planned: Planned, written: bool) -> list[list[str]]:
    """The kept base layers (``--keep-base``), bottom first, marked as such."""
    out = []
    name, what = ("prev", "(previous build, kept)") if planned.patched else ("base", "(base, kept)")
    for n, kept in enumerate(planned.base, 1):
        digest = kept.blob.digest.partition(":")[2][:12]
        if written:
            out.append([f"{name}/{n}", "-", human_size(kept.blob.size), "-", digest, what])
        else:
            out.append([f"{name}/{n}", "-", "-", f"{what} {digest}"])
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _compression(media_type: str) -> str:
    for kind in ("gzip", "zstd"):
        if media_type.endswith("+" + kind):
            return kind
    return "none"


def plan_json(planned: Planned) -> dict[str, Any]:
    return {
        "rules": planned.rules_name,
        "previous": planned.previous,
        "patch": planned.patched,
        "base_layers": [
            {"digest": k.blob.digest, "diff_id": k.diff_id, "compressed_bytes": k.blob.size,
             "media_type": k.blob.media_type}
            for k in planned.base
        ],
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
        "splits": [
            {
                "group": split.group,
                "packages": list(split.packages),
                "bytes": split.bytes,
                "threshold": split.threshold,
                "parts": [
                    {
                        "part": part.part,
                        "group": part.key,
                        "files": part.files,
                        "bytes": part.bytes,
                        "classes": [
                            {"class": name, "bytes": size} for name, size in part.classes
                        ],
                    }
                    for part in split.parts
                ],
            }
            for split in planned.outcome.splits
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
    from pkgchunk.verify import ROOT  # the root's metadata: shown as "/"

    return {
        "a": a,
        "b": b,
        "identical": result.identical,
        "symmetric": result.symmetric,
        "paths": result.paths,
        "pruned": [{"prefix": p, "paths": n} for p, n in result.pruned],
        "differences": [
            {"path": ("/" if d.path == ROOT else "/" + d.path) if d.path else None,
             "what": d.what}
            for d in result.differences
        ],
        "notes": list(result.notes),
    }


def verify_text(result: VerifyResult, limit: int = 20) -> str:
    """``identical: N paths``, or the first ``limit`` differences and how many more; then
    what B records leaving out (``pruned: N paths under PREFIX``)."""
    pruned = [f"pruned: {n} paths under {p} (B records leaving them out)"
              for p, n in result.pruned]
    if result.identical:
        return "\n".join([f"identical: {result.paths} paths", *pruned])
    shown = result.differences[:limit]
    lines = [str(d) for d in shown]
    more = len(result.differences) - len(shown)
    if more:
        lines.append(f"... and {more} more differences")
    return "\n".join(lines + pruned)


# --------------------------------------------------------------------------- diff

def diff_json(result: DiffResult) -> dict[str, object]:
    return {
        "old": result.old,
        "new": result.new,
        "pull_bytes": result.pull_bytes,
        "total_bytes": result.total_bytes,
        "docker_prefix_pull_bytes": result.prefix_pull_bytes,
        "partial_pull_bytes": result.partial_pull_bytes,
        "partial_pull": _partial_json(result),
        "layers": [
            {"name": lc.name, "digest": lc.digest, "bytes": lc.size, "pulled": lc.pulled,
             "partial_bytes": lc.partial.total if lc.partial else None,
             "ranges": lc.partial.ranges if lc.partial else None}
            for lc in result.layers
        ],
        "changed_groups": [
            {"group": g.group, "old": g.old or None, "new": g.new or None, "layer": g.layer}
            for g in result.groups
        ],
        "split_groups": [
            {
                "group": sc.group,
                "parts": [
                    {"part": part, "changed": changed, "layer": layer}
                    for part, changed, layer in sc.parts
                ],
            }
            for sc in result.splits
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
    for sc in result.splits:
        parts = ", ".join(
            f"{name} {'changed' if changed else 'kept'}" for name, changed, _ in sc.parts
        )
        lines.append(f"split {sc.group} by file behaviour: {parts}")
    part = _partial_json(result)
    if part is not None and result.partial_pull_bytes is not None:
        size = human_size
        lines.append(
            f"partial pull (zstd:chunked): {size(result.partial_pull_bytes)}:"
            f" {part['files']} files in {part['ranges']} ranges ({size(part['chunk_bytes'])}"
            f" + {size(part['gap_bytes'])} between them), TOCs {size(part['toc_bytes'])},"
            f" tar-split {size(part['tarsplit_bytes'])}"
            + (f", whole blobs {size(part['whole_blob_bytes'])}"
               if part["whole_blob_bytes"] else "")
        )
    return "\n".join(lines)


def _partial_json(result: DiffResult) -> dict[str, int] | None:
    """What a partial-pull client fetches, summed over the pulled layers (None: unknown)."""
    fetches = [lc.partial for lc in result.layers if lc.partial is not None]
    if result.partial_pull_bytes is None:
        return None
    return {
        "toc_bytes": sum(f.toc_bytes for f in fetches),
        "tarsplit_bytes": sum(f.tarsplit_bytes for f in fetches),
        "chunk_bytes": sum(f.chunk_bytes for f in fetches),
        "gap_bytes": sum(f.gap_bytes for f in fetches),
        "whole_blob_bytes": sum(f.whole_bytes for f in fetches),
        "ranges": sum(f.ranges for f in fetches),
        "files": sum(f.files for f in fetches),
    }


def _change_text(g: GroupChange) -> str:
    if not g.old:
        return f"+ {g.group} {g.new} (new)"
    if not g.new:
        return f"- {g.group} {g.old} (removed)"
    return f"~ {g.group} {g.old} -> {g.new}"


# --------------------------------------------------------------------------- gc

def gc_text(ref: str, garbage: Garbage, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    return (
        f"{ref}: {verb} {_count(len(garbage.removed), 'unreferenced blob')}"
        f" ({human_size(garbage.removed_bytes)}), kept {garbage.kept}"
    )


def gc_json(ref: str, garbage: Garbage, dry_run: bool) -> dict[str, Any]:
    return {
        "layout": ref,
        "dry_run": dry_run,
        "removed": list(garbage.removed),
        "removed_bytes": garbage.removed_bytes,
        "kept": garbage.kept,
    }
