"""pkgchunk's own planner as benchmark strategies, and its mtime policy as a scoring mode.

Two strategies are registered into ``strategies.STRATEGIES``:

* ``pkgchunk``: the default rules and the previous plan carried the way the CLI carries it:
  the ``org.pkgchunk.plan`` label encoded for build N is decoded for build N+1;
* ``pkgchunk-fresh``: the same without a previous plan (every build planned from scratch).

Both run the library exactly as ``pkgchunk.compose`` does, through its public API only:
ownership, the rules the image's family picks (``default_rules_name``), ``apply_mtimes`` (policy
``clamp``, no SOURCE_DATE_EPOCH, like the CLI without one) and ``plan_layers`` with derived files
following their origin.

Where the input is a real root (the Debian corpus, the RPM image), the tree and the ownership
come from pkgchunk's own readers (``rootfs:`` input, ``collect``). A synthetic build
(the update series) has no root: its tree is made from the build's manifest and its ownership
from the real ownership of the build the series started from (``register_reference``), with
the series' version bumps and kernel renames applied. Without a reference (the ``--quick``
toy), ownership comes from the manifest alone.

The scoring mode ``pkgchunk-policy`` (``score.EXTERNAL_MTIMES``) gives every strategy the
mtimes pkgchunk's policy produces and puts every parent directory a layer needs into it, as
pkgchunk's writer does: the same metadata for all, so only the layering differs.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import score  # noqa: E402
from model import Build, PkgInfo  # noqa: E402
from strategies import STRATEGIES, Plan, Prev, Strategy  # noqa: E402

from pkgchunk import (  # noqa: E402
    BuildRecord,
    Entry,
    FileTree,
    Ownership,
    Package,
    PackageDb,
    Rules,
    apply_mtimes,
    collect,
    default_rules_name,
    directory_epoch,
    load_rules,
    open_image,
    plan_layers,
)

POLICY_MODE = "pkgchunk-policy"
#: The config label holding the plan the next build starts from (docs/planner.md).
PLAN_LABEL = "org.pkgchunk.plan"
_ROOTS: dict[str, Path] = {}
_REFERENCE: list[Build] = []
_RULES: dict[str, Rules] = {}
#: The directories' mtime limit of the chain being scored (the CLI carries it in its label).
_CHAIN_EPOCH: list[int | None] = []
_DPKG_INFO = "var/lib/dpkg/info/"


def register_root(build: Build, root: Path) -> None:
    """Read ``build`` from this real root with pkgchunk's readers (not from its manifest)."""
    _ROOTS[build.name] = root


def register_reference(build: Build) -> None:
    """Synthetic builds derive their ownership from this (real) build's."""
    _REFERENCE[:] = [build]


def start_chain(build: Build) -> None:
    """Score the builds that follow with the directory limit this build chooses, as the CLI
    carries it from one build to the next (``org.pkgchunk.mtime``: ``dirs=T``)."""
    _CHAIN_EPOCH[:] = []
    forget([build])
    _CHAIN_EPOCH[:] = [view(build).directory_epoch]


@dataclass(frozen=True)
class View:
    """A build as pkgchunk sees it: its tree after the mtime policy, and its ownership."""

    tree: FileTree
    ownership: Ownership
    rules: str
    directory_epoch: int | None
    #: The config pkgchunk reads with a real root (``rootfs:``); None for a synthetic build.
    config: Mapping[str, Any] | None = None


def view(build: Build) -> View:
    cached = build.__dict__.get("_pkgchunk_view")
    if isinstance(cached, View) and (
        not _CHAIN_EPOCH or cached.directory_epoch == _CHAIN_EPOCH[0]
    ):
        return cached
    root = _ROOTS.get(build.name)
    if root is not None:
        with open_image(f"rootfs:{root}") as image:
            tree = image.tree
            ownership = collect(tree)
            # the policy tree keeps no reference to the image's workdir: rootfs data is in place
            out = _make_view(tree, ownership, image.config)
        missing = set(build.files) ^ set(out.tree.entries)
        if missing:
            raise ValueError(f"{root}: {len(missing)} paths differ from the bench manifest")
    else:
        out = _make_view(tree_of(build), ownership_of(build))
    build.__dict__["_pkgchunk_view"] = out
    return out


def _make_view(
    tree: FileTree, ownership: Ownership, config: Mapping[str, Any] | None = None
) -> View:
    name = default_rules_name(ownership)
    dirs = _CHAIN_EPOCH[0] if _CHAIN_EPOCH else directory_epoch(tree, ownership)
    policy_tree = apply_mtimes(
        tree, ownership, policy="clamp", source_date_epoch=None, directory_epoch=dirs
    )
    return View(policy_tree, ownership, name, dirs, config)


def _rules(name: str) -> Rules:
    if name not in _RULES:
        _RULES[name] = load_rules(name)
    return _RULES[name]


# ---------------------------------------------------------------- synthetic builds


def tree_of(build: Build) -> FileTree:
    """The build's manifest as a pkgchunk tree (no content: planning reads metadata only)."""
    entries: dict[str, Entry] = {}
    for p, r in build.files.items():
        major = minor = 0
        if r.kind in ("chr", "blk") and "," in r.digest:
            a, _, b = r.digest.partition(",")
            major, minor = int(a), int(b)
        entries[p] = Entry(
            path=p, kind=r.kind, mode=r.mode, uid=r.uid, gid=r.gid, mtime=r.mtime,
            size=r.size if r.kind == "reg" else 0, target=r.digest if r.kind == "sym" else "",
            devmajor=major, devminor=minor,
        )
    return FileTree(entries=entries, label=build.name)


def _info_owner(path: str, keys: Mapping[str, str]) -> str | None:
    """dpkg's ``info/PKG[:ARCH].*`` files belong to PKG (pkgchunk's dpkg reader says so)."""
    if not path.startswith(_DPKG_INFO):
        return None
    name = path[len(_DPKG_INFO) :]
    if "/" in name:
        return None
    stem = name.rpartition(".")[0].partition(":")[0]
    return keys.get(stem)


def ownership_of(build: Build) -> Ownership:
    """Ownership of a synthetic build: the reference's, with this build's versions and names."""
    ref = view(_REFERENCE[0]) if _REFERENCE and _REFERENCE[0] is not build else None
    ref_build = _REFERENCE[0] if ref is not None else None
    ref_pkgs: dict[str, Package] = {}  # package name -> reference Package
    if ref is not None:
        ref_pkgs = {p.name: p for p in ref.ownership.packages.values()}
    packages: dict[str, Package] = {}
    key_of: dict[str, str] = {}
    for name, info in build.packages.items():
        base = ref_pkgs.get(name) or _renamed(name, ref_pkgs)
        if base is None:
            pkg = Package(name=name, version=info.version, arch="", source=info.source,
                          db="dpkg", changelog_times=info.changelog_dates)
        else:
            start = ref_build.packages.get(base.name) if ref_build is not None else None
            pkg = _bumped(base, name, info.version, info.changelog_dates, start)
        packages[pkg.key] = pkg
        key_of[name] = pkg.key
    owners: dict[str, tuple[str, ...]] = {}
    ref_owners = ref.ownership.owners if ref is not None else {}
    ref_names = {k: p.name for k, p in ref.ownership.packages.items()} if ref else {}
    for p, r in build.files.items():
        keys: tuple[str, ...] = ()
        if p in ref_owners:
            keys = tuple(sorted({key_of[n] for k in ref_owners[p]
                                 if (n := ref_names[k]) in key_of}))
        if not keys and r.owner is not None and r.owner in key_of:
            keys = (key_of[r.owner],)
        if not keys and (k := _info_owner(p, key_of)) is not None:
            keys = (k,)
        if keys:
            owners[p] = keys
    if ref is not None:
        pkgdb = frozenset(p for p in ref.ownership.pkgdb_paths if p in build.files)
        fmt = ref.ownership.dbs[0].format if ref.ownership.dbs else "dpkg"
        dbpath = ref.ownership.dbs[0].path if ref.ownership.dbs else ""
    else:
        pkgdb = frozenset(p for p in build.files if p == "var/lib/dpkg/status")
        fmt, dbpath = "dpkg", "var/lib/dpkg/status"
    db = PackageDb(format=fmt, path=dbpath, packages=tuple(packages.values()))
    for p in pkgdb:
        owners.pop(p, None)
    return Ownership(dbs=(db,), packages=packages, owners=owners, pkgdb_paths=pkgdb)


def _bumped(
    base: Package, name: str, version: str, dates: tuple[int, ...], start: PkgInfo | None
) -> Package:
    """The reference package as this build has it: the series appends to the version string
    (``+benchK``) and prepends the bump's changelog dates; renamed kernels take the new name."""
    if start is not None and name == base.name and version == start.version:
        return base
    if start is not None and version.startswith(start.version):
        suffix = version[len(start.version) :]
    else:
        suffix = "~" + version
    newest = start.changelog_dates[0] if start is not None and start.changelog_dates else -1
    added = tuple(d for d in dates if d > newest)
    return dataclasses.replace(
        base,
        name=name,
        version=base.version if base.release else base.version + suffix,
        release=base.release + suffix if base.release else "",
        changelog_times=(*added, *base.changelog_times),
    )


_ABI = re.compile(r"\d+\.\d+\.\d+-\d+")


def _renamed(name: str, ref_pkgs: Mapping[str, Package]) -> Package | None:
    """The reference package a kernel-ABI-renamed package came from (linux-image-6.1.0-57)."""
    if not _ABI.search(name):
        return None
    shape = _ABI.sub("#", name)
    for n, p in ref_pkgs.items():
        if _ABI.sub("#", n) == shape:
            return p
    return None


# ---------------------------------------------------------------- strategies


def record_of(plan_label: str) -> BuildRecord:
    """What the next build reads from a build's plan label, decoded as the CLI decodes it."""
    return BuildRecord.from_labels({PLAN_LABEL: plan_label})


def make_strategy(fresh: bool) -> Strategy:
    labels: dict[tuple[int, int], tuple[Build, str]] = {}

    def pkgchunk_plan(build: Build, budget: int, prev: Prev | None) -> Plan:
        v = view(build)
        previous = None
        if prev is not None:
            held = labels.get((id(prev[0]), budget))
            if held is not None and held[0] is prev[0]:
                previous = record_of(held[1]).plan
        outcome = plan_layers(
            v.tree, v.ownership, _rules(v.rules), previous, max_layers=budget, fresh=fresh,
            derived="follow",
        )
        labels[(id(build), budget)] = (build, outcome.label)
        return [list(layer.paths) for layer in outcome.plan.layers]

    pkgchunk_plan.__doc__ = f"pkgchunk's planner{' without a previous plan' if fresh else ''}."
    return pkgchunk_plan


def policy_mtimes(build: Build) -> dict[str, int]:
    """Every path's mtime under pkgchunk's clamp policy."""
    return {p: e.mtime for p, e in view(build).tree.entries.items()}


def forget(builds: list[Build]) -> None:
    """Drop the cached views (memory) once a block is scored."""
    for b in builds:
        b.__dict__.pop("_pkgchunk_view", None)


def register(strategies: dict[str, Strategy] = STRATEGIES) -> None:
    strategies["pkgchunk"] = make_strategy(fresh=False)
    strategies["pkgchunk-fresh"] = make_strategy(fresh=True)
    score.EXTERNAL_MTIMES[POLICY_MODE] = policy_mtimes


register()
