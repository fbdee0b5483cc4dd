"""The ``packages`` report: databases, each package's files and bytes, and what is unowned.

Counts are of tree paths present in this image. A package's ``bytes`` is the sum of the
sizes of the regular files it owns; a file with several owners counts fully for each of
them (so package bytes can add up to more than the image), while ``unowned`` counts
every path that no package owns and that is not a package database file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pkgchunk.pkgdb.model import Ownership
from pkgchunk.pkgdb.ownership import owned_paths
from pkgchunk.tree import FileTree, encode_path, parent

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


def build(tree: FileTree, ownership: Ownership) -> PackagesReport:
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


def to_json(report: PackagesReport) -> dict[str, Any]:
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


def format_table(report: PackagesReport) -> str:
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
