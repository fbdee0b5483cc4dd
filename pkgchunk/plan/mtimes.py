"""The mtime policy: why two rebuilds of the same package set give identical layers.

dpkg and rpm unpack payload files with the mtimes recorded in the package (stable across
rebuilds), but what they write themselves (``info/PKG.list``, directories they create,
maintainer-script output) gets the build's wall-clock time. Kept as is, those mtimes change
the digest of every layer that holds such a file on every rebuild.

Policy ``clamp`` (the default): every path owned by a package gets
``min(mtime, stable time of its owner)``, the stable time of a package being the newest
mtime among its own payload files (or its RPM build time when it has none). Files derived
from a package's files (``__pycache__/*.pyc``, ``usr/lib/modules/VER/modules.*``) count as
its own; a symlink standing for a directory (merged /usr's ``bin``, which packages list as
their directory) does not count. A file with several owners takes the newest of their
times. Every directory, and every symlink standing for one, gets ``min(mtime, T)``: every
layer holding a file below a directory carries the directory's entry too, so its mtime must
not move when a package below it is updated (a time taken from the packages below it moved
whenever the oldest of them was: 2.27x the floor on the benchmark series against 1.50x).
``T`` is 1 January (UTC) of the year of the image's oldest stable time
(:func:`oldest_year_start`), recorded in the build record (``plan/record.py``, ``dirs=T``)
and carried over by the next build (:func:`directory_epoch`), so it never moves once
chosen. Other unowned paths get ``min(mtime, SOURCE_DATE_EPOCH)`` when an epoch is given.
Mtimes only ever move backwards. Policy ``keep`` leaves every mtime as it is.

The function is deterministic in (tree, ownership, epoch, T), and the label records epoch
and T, so ``verify`` can apply it to the input and compare exactly.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Literal

from pkgchunk.pkgdb.model import Ownership
from pkgchunk.plan.groups import derived_owners
from pkgchunk.tree import Entry, FileTree

Policy = Literal["clamp", "keep"]

POLICIES: tuple[Policy, ...] = ("clamp", "keep")

#: Files the package manager writes for a package at install time: not payload.
_DB_PREFIXES = ("var/lib/dpkg/", "usr/lib/sysimage/rpm/", "var/lib/rpm/")


def _dir_like(tree: FileTree, path: str, entry: Entry) -> bool:
    """A directory, or a symlink that stands for one (merged /usr's ``bin -> usr/bin``).

    Packages list ``/bin`` and ``/lib64`` as their directories; in a merged-/usr image
    those paths are symlinks the build created, with the build's wall-clock time. They
    are not any package's payload, so they must not set a package's stable time.
    """
    if entry.kind == "dir":
        return True
    if entry.kind != "sym":
        return False
    real = tree.resolve(path)
    target = tree.entries.get(real) if real else None
    return target is not None and target.kind == "dir"


def stable_times(tree: FileTree, ownership: Ownership) -> dict[str, int]:
    """Package key -> its stable time: newest mtime of its payload files in this image."""
    newest: dict[str, int] = {}
    for path, owners in ownership.owners.items():
        entry = tree.entries.get(path)
        if entry is None or path.startswith(_DB_PREFIXES) or _dir_like(tree, path, entry):
            continue
        for key in owners:
            if entry.mtime > newest.get(key, -1):
                newest[key] = entry.mtime
    for key, pkg in ownership.packages.items():
        if key not in newest and pkg.buildtime is not None:
            newest[key] = pkg.buildtime
    return newest


def oldest_year_start(stable: Mapping[str, int]) -> int | None:
    """The mtime limit of every directory: 1 January (UTC) of the oldest stable time's year.

    The oldest stable time alone would move whenever the image's oldest package is
    updated or removed, and with it every directory entry in every layer; the start of its
    year moves only once every package of that year has gone. Still no later than any
    package's payload. None without packages.
    """
    oldest = min(stable.values(), default=None)
    if oldest is None:
        return None
    try:
        year = datetime.datetime.fromtimestamp(oldest, tz=datetime.UTC).year
        start = datetime.datetime(year, 1, 1, tzinfo=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return oldest
    return min(oldest, int(start.timestamp()))


def apply(
    tree: FileTree,
    ownership: Ownership,
    *,
    policy: Policy = "clamp",
    source_date_epoch: int | None = None,
    directory_epoch: int | None = None,
) -> FileTree:
    """A tree whose mtimes follow ``policy`` (the input tree is not changed).

    ``directory_epoch`` is the directories' limit carried from the previous build (its
    label); None computes it from this image (:func:`oldest_year_start`).
    """
    if policy == "keep":
        if source_date_epoch is None:
            return tree
        return _clamp_all(tree, source_date_epoch)
    stable = stable_times(tree, ownership)
    # Generated files (py3compile's .pyc, depmod's modules.*) are written at build time;
    # clamped like their origin they stay identical across rebuilds and follow its layer.
    derived = derived_owners(tree, ownership)
    limits: dict[str, int] = {}
    # A directory's entry is in every layer that holds anything below it, so its mtime must
    # not depend on which packages below it were updated.
    floor = oldest_year_start(stable) if directory_epoch is None else directory_epoch
    for path, entry in tree.entries.items():
        if floor is not None and _dir_like(tree, path, entry):
            limits[path] = floor
            continue
        owners = ownership.owners.get(path) or derived.get(path)
        times = [stable[k] for k in owners if k in stable] if owners else []
        if times:
            limits[path] = max(times)
    if source_date_epoch is not None:
        for path in tree.entries:
            cur = limits.get(path)
            limits[path] = source_date_epoch if cur is None else min(cur, source_date_epoch)
    # Hardlinked paths are one inode with one mtime: the strictest limit of the group wins.
    group_limit: dict[int, int] = {}
    for path, entry in tree.entries.items():
        if entry.link and path in limits:
            cur = group_limit.get(entry.link)
            group_limit[entry.link] = limits[path] if cur is None else min(cur, limits[path])
    entries = dict(tree.entries)
    for path, entry in tree.entries.items():
        limit = group_limit.get(entry.link) if entry.link else limits.get(path)
        if limit is not None and entry.mtime_exact > (limit, 0):
            entries[path] = _moved(entry, limit)
    root = tree.root
    if root is not None:
        # The root is a directory like any other: it takes the directories' limit.
        limit = floor
        if source_date_epoch is not None:
            limit = source_date_epoch if limit is None else min(limit, source_date_epoch)
        if limit is not None and root.mtime_exact > (limit, 0):
            root = _moved(root, limit)
    return tree.derive(entries, root)


def _moved(entry: Entry, limit: int) -> Entry:
    return dataclasses.replace(entry, mtime=limit, mtime_ns=0)


def _clamp_all(tree: FileTree, epoch: int) -> FileTree:
    entries = {
        p: (_moved(e, epoch) if e.mtime_exact > (epoch, 0) else e)
        for p, e in tree.entries.items()
    }
    root = tree.root
    if root is not None and root.mtime_exact > (epoch, 0):
        root = _moved(root, epoch)
    return tree.derive(entries, root)


def directory_epoch(tree: FileTree, ownership: Ownership, carried: int | None = None) -> int | None:
    """``T`` for this build: the previous build's when it recorded one (``carried``), else the
    start of the year of this image's oldest stable time.

    Carried over so directory entries never move once chosen: a value computed afresh from
    each image would move whenever the image's oldest package does.
    """
    if carried is not None:
        return carried
    return oldest_year_start(stable_times(tree, ownership))
