"""Every path of an image mapped to the packages that own it, for all database formats.

Databases record paths as the package shipped them ('/bin/ls'), but the image may have
moved them: on a merged-/usr system ``bin`` is a symlink to ``usr/bin`` and the file is
``usr/bin/ls``. So each recorded path is mapped to the tree by resolving its *parent*
through the image's own symlinks and keeping its last component as is (a package that
ships a symlink owns the symlink, not what it points to). Only paths present in the tree
get owners. The database files themselves form their own category (``pkgdb_paths``):
they change on every update, whoever lists them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from pkgchunk.errors import PkgdbError, PkgdbWarning
from pkgchunk.pkgdb import registry, rpmbackend
from pkgchunk.pkgdb.model import Ownership, Package, PackageDb, PackageDbReader
from pkgchunk.tree import FileTree, normalize


class PathMapper:
    """Maps database paths to tree paths, caching the resolution of each parent directory."""

    def __init__(self, tree: FileTree) -> None:
        self.tree = tree
        self._dirs: dict[str, str | None] = {"": ""}

    def __call__(self, recorded: str) -> str | None:
        """The tree path of a recorded path, or None when it is not in the image."""
        rel = recorded.lstrip("/")
        if "//" in rel or "/." in rel or rel.startswith(".") or rel.endswith("/"):
            norm = normalize(rel)
            if not norm:
                return None
            rel = norm
        if not rel:
            return None
        head, _, name = rel.rpartition("/")
        real_dir = self._dirs.get(head, "\0")
        if real_dir == "\0":
            real_dir = self._resolve_dir(head)
            self._dirs[head] = real_dir
        if real_dir is None:
            return None
        path = f"{real_dir}/{name}" if real_dir else name
        entry = self.tree.entries.get(path)
        # The tree's own string, not a copy: every owned path is kept for the whole run.
        return entry.path if entry is not None and entry.path == path else None

    def _resolve_dir(self, head: str) -> str | None:
        real = self.tree.resolve(head)
        if real is None:
            return None
        entry = self.tree.entries.get(real)
        return real if real == "" or (entry is not None and entry.kind == "dir") else None


def collect(
    tree: FileTree,
    *,
    ignore_errors: bool = False,
    readers: Sequence[PackageDbReader] | None = None,
) -> Ownership:
    """Read every package database the image has and map all its paths to owners.

    With ``ignore_errors`` a corrupt database is skipped with a warning (its files then
    count as unowned; the corrupt file itself stays in ``pkgdb_paths``); otherwise its
    PkgdbError propagates. ``readers`` defaults to every registered format.
    """
    found = list(registry.readers() if readers is None else readers)
    dbs: list[PackageDb] = []
    notes: list[str] = []
    pkgdb: set[str] = set()
    detected: list[tuple[PackageDbReader, list[str]]] = []
    for reader in found:
        try:
            detected.append((reader, _detect(reader, tree, notes)))
        except PkgdbError as err:
            if not ignore_errors:
                raise
            notes.append(f"{err}; {reader.format} databases ignored")
    for reader, paths in _one_rpm_backend(tree, detected, notes, pkgdb):
        for path in paths:
            try:
                dbs.append(_read(reader, tree, path, notes))
            except PkgdbError as err:
                if not ignore_errors:
                    raise
                notes.append(f"{err}; {reader.format} database ignored, its files count as unowned")
                pkgdb.add(path)
    packages: dict[str, Package] = {}
    # A path's owner as a str, a set only once a second one shows up: one set per path
    # would be the largest allocation of this stage.
    owners: dict[str, str | set[str]] = {}
    mapper = PathMapper(tree)
    for db in dbs:
        pkgdb.update(p for p in db.paths if p in tree.entries)
        for pkg in db.packages:
            if pkg.key in packages:
                notes.append(
                    f"{db.path}: {pkg.key} is also in another database; second one ignored"
                )
                continue
            packages[pkg.key] = pkg
            for f in pkg.files:
                where = mapper(f.path)
                if where is None:
                    continue
                cur = owners.get(where)
                if cur is None:
                    owners[where] = pkg.key
                elif isinstance(cur, str):
                    if cur != pkg.key:
                        owners[where] = {cur, pkg.key}
                else:
                    cur.add(pkg.key)
    return Ownership(
        dbs=tuple(dbs),
        packages=packages,
        owners=_owner_tuples(owners, pkgdb),
        pkgdb_paths=frozenset(pkgdb),
        warnings=tuple(notes),
    )


def _owner_tuples(
    owners: dict[str, str | set[str]], pkgdb: set[str]
) -> dict[str, tuple[str, ...]]:
    """Path -> sorted owner keys, one shared tuple per distinct owner set (most paths of a
    package have the same owners, so this keeps a few thousand tuples, not one per path)."""
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    out: dict[str, tuple[str, ...]] = {}
    for path, keys in owners.items():
        if path in pkgdb:
            continue
        t = (keys,) if isinstance(keys, str) else tuple(sorted(keys))
        out[path] = shared.setdefault(t, t)
    return out


def _one_rpm_backend(
    tree: FileTree,
    detected: list[tuple[PackageDbReader, list[str]]],
    notes: list[str],
    pkgdb: set[str],
) -> list[tuple[PackageDbReader, list[str]]]:
    """rpm reads one backend: keep the databases of the format it would read, warn about
    the rest (their files still count as package-database files)."""
    present = {r.format for r, paths in detected if paths and r.format.startswith("rpm-")}
    if len(present) < 2:
        return detected
    chosen, why = rpmbackend.choose(tree, present)
    kept: list[tuple[PackageDbReader, list[str]]] = []
    for reader, paths in detected:
        if reader.format.startswith("rpm-") and reader.format != chosen:
            for path in paths:
                notes.append(
                    f"/{path}: {reader.format} database ignored: rpm reads {chosen} here "
                    f"({why}); its packages are not taken as installed"
                )
                pkgdb.add(path)
            continue
        kept.append((reader, paths))
    return kept


def _detect(reader: PackageDbReader, tree: FileTree, notes: list[str]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PkgdbWarning)
        paths = reader.detect(tree)
    _keep(caught, notes)
    return paths


def _read(reader: PackageDbReader, tree: FileTree, path: str, notes: list[str]) -> PackageDb:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PkgdbWarning)
        try:
            return reader.read(tree, path)
        finally:
            _keep(caught, notes)


def _keep(caught: list[warnings.WarningMessage], notes: list[str]) -> None:
    """PkgdbWarnings become notes; any other warning is passed on unchanged."""
    for w in caught:
        if issubclass(w.category, PkgdbWarning):
            notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def owned_paths(ownership: Ownership) -> dict[str, list[str]]:
    """Package key -> the tree paths it owns (sorted), every package present."""
    out: dict[str, list[str]] = {key: [] for key in ownership.packages}
    for path, keys in ownership.owners.items():
        for key in keys:
            out[key].append(path)
    for paths in out.values():
        paths.sort()
    return out
