"""Ownership + tree + rules -> groups: the units the planner places into layers.

A group is what changes together: a source package (or binary package, with
``group_by: name``), a rules group, a bucket of unowned files, one big unowned
file, or the package databases. Every tree path lands in exactly one group.

Order of decisions for one path (first hit wins):

0. a ``user.component=NAME`` xattr on the path, or on the nearest directory above it
   that has one -> ``component/NAME`` (what rpm-ostree and chunkah honour: the
   Containerfile author's word beats packages and rules);
1. a package database file (``Ownership.pkgdb_paths``) -> ``pkgdb``;
2. an owned path -> its owner's group (several owners: the smallest group key,
   so the choice never depends on sizes that drift between builds);
3. unowned, matching an explicit bucket's paths -> that bucket (rules order);
4. unowned and derived from an owned file (:class:`Derivation`; with
   ``derived="separate"`` they all go to one ``derived`` group instead):
   ``__pycache__/NAME.*.pyc`` and ``NAME.pyc`` follow ``NAME.py``; a
   ``__pycache__`` directory follows its parent; anything under
   ``usr/lib/modules/VER/`` follows the package owning that kernel;
5. an unowned regular file larger than ``big_file_threshold`` -> a group of its own;
6. the catch-all bucket.

A rules group's ``paths`` select packages (most of their bytes there), never
unowned files: files generated at build time change metadata on every build and
would drag a big stable group's layer along. For the same reason derived files
only stay stable when the mtime policy clamps them like their origin
(:func:`derived_owners` gives the mapping).

Finally every hardlink set moves to the group of its first path (canonical
order): a layer cannot hold half an inode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pkgchunk.errors import InputError
from pkgchunk.pkgdb.model import Ownership, Package
from pkgchunk.plan.rules import BucketRule, Frequency, Glob, GroupRule, Rules
from pkgchunk.tree import Entry, FileTree, encode_path, parent

GroupKind = Literal["package", "bucket", "bigfile", "pkgdb", "component"]
#: Where derived files go: with their origin, or all in one ``derived`` group.
DerivedMode = Literal["follow", "separate"]

PKGDB_KEY = "pkgdb"
#: All derived files when they do not follow their origin (``derived="separate"``).
DERIVED_KEY = "derived"
RULE_PREFIX = "rule/"
SOURCE_PREFIX = "src/"
NAME_PREFIX = "pkg/"
BUCKET_PREFIX = "bucket/"
BIG_PREFIX = "big/"
COMPONENT_PREFIX = "component/"

#: The xattrs rpm-ostree (ostree-ext) and chunkah read to assign files by hand.
COMPONENT_XATTR = "user.component"
INTERVAL_XATTR = "user.update-interval"
#: chunkah's named intervals, in days; a plain positive integer is days too.
NAMED_INTERVALS = {"daily": 1, "weekly": 7, "biweekly": 14, "monthly": 30, "quarterly": 90,
                   "yearly": 365}
MAX_COMPONENT_CHARS = 256

#: Kernel module trees: unowned files below ``PREFIX/VER/`` follow that kernel.
MODULE_DIRS = ("usr/lib/modules/", "lib/modules/")
#: Version strings longer than this are recorded as a digest (plan label stays small).
MAX_VERSION_CHARS = 32


@dataclass(frozen=True, slots=True)
class Group:
    """One unit of placement. ``packages`` are Ownership package keys; ``versions``
    identify the content for change detection (sorted ``name=evr`` for package
    groups, a size fingerprint for unowned content); ``paths`` are in canonical
    order; ``bytes`` counts each hardlinked inode once."""

    key: str
    kind: GroupKind
    packages: tuple[str, ...]
    versions: tuple[str, ...]
    paths: tuple[str, ...]
    bytes: int
    frequency: Frequency | None = None
    dedicated: bool = False
    #: For a part of a split package group (plan/split.py): which part ("" when whole).
    part: str = ""
    #: Days between updates a ``user.update-interval`` xattr gives (component groups).
    update_interval: int | None = None

    @property
    def version(self) -> str:
        """The versions as one short string (a digest when long)."""
        return version_string(self.versions)


def version_string(versions: Iterable[str]) -> str:
    text = " ".join(versions)
    if len(text) <= MAX_VERSION_CHARS:
        return text
    return "~" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _is_pyc_of(path: str) -> str | None:
    """The ``.py`` a compiled file derives from, or None."""
    if not path.endswith(".pyc"):
        return None
    head, _, name = path.rpartition("/")
    if head.endswith("__pycache__") and (head == "__pycache__" or head.endswith("/__pycache__")):
        stem = name.split(".", 1)[0]
        if not stem or stem == name:
            return None
        base = parent(head)
        return f"{base}/{stem}.py" if base else f"{stem}.py"
    return path[:-1]


def _kernel_dir(path: str) -> str | None:
    """``usr/lib/modules/VER`` for a path inside (or equal to) a module tree."""
    for prefix in MODULE_DIRS:
        if path.startswith(prefix):
            ver, _, _ = path[len(prefix) :].partition("/")
            return prefix + ver if ver else None
    return None


class Derivation:
    """Which owned path an unowned generated file derives from (``derive(path)``).

    ``NAME.py`` for a compiled ``.pyc``; the parent directory for a ``__pycache__``
    directory; for anything in a kernel module tree ``usr/lib/modules/VER/`` the
    kernel's ``vmlinuz`` when owned, else the first owned path in that tree (canonical
    order), else the tree's directory itself. None when there is no owned origin.
    """

    def __init__(self, tree: FileTree, ownership: Ownership) -> None:
        self.tree = tree
        self.owners = ownership.owners
        self._kernels: dict[str, str | None] = {}

    def _owned(self, path: str) -> bool:
        return bool(self.owners.get(path))

    def _kernel_anchor(self, kdir: str) -> str | None:
        if kdir not in self._kernels:
            found: str | None = None
            if self._owned(f"{kdir}/vmlinuz"):
                found = f"{kdir}/vmlinuz"
            else:
                under = [p for p in self.owners if p.startswith(kdir + "/") and self._owned(p)]
                if under:
                    found = min(under, key=encode_path)
                elif self._owned(kdir):
                    found = kdir
            self._kernels[kdir] = found
        return self._kernels[kdir]

    def __call__(self, path: str) -> str | None:
        if self._owned(path):
            return None
        py = _is_pyc_of(path)
        if py is not None and self._owned(py):
            return py
        entry = self.tree.entries.get(path)
        if entry is not None and entry.kind == "dir" and path.rpartition("/")[2] == "__pycache__":
            up = parent(path)
            if up and self._owned(up):
                return up
        kdir = _kernel_dir(path)
        if kdir is not None:
            return self._kernel_anchor(kdir)
        return None


def derived_owners(tree: FileTree, ownership: Ownership) -> dict[str, tuple[str, ...]]:
    """Unowned generated path -> the package keys owning its origin.

    For the mtime policy: a derived file stays byte-identical across rebuilds only
    when it is clamped like its origin, not to SOURCE_DATE_EPOCH (Debian's
    py3compile output and depmod's ``modules.*`` are written at build time).
    Package databases are left out.
    """
    derive = Derivation(tree, ownership)
    out: dict[str, tuple[str, ...]] = {}
    for path in tree.entries:
        if path in ownership.pkgdb_paths:
            continue
        origin = derive(path)
        if origin is not None:
            out[path] = tuple(ownership.owners[origin])
    return out


def _xattr_text(entry: Entry, name: str) -> str | None:
    for key, value in entry.xattrs:
        if key == name:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"/{entry.path}: {name} xattr is not UTF-8") from None
    return None


def parse_interval(path: str, text: str) -> int:
    """A ``user.update-interval`` value in days (chunkah's names or a positive integer)."""
    days = NAMED_INTERVALS.get(text.strip())
    if days is None:
        try:
            days = int(text.strip())
        except ValueError:
            days = 0
    if days <= 0:
        names = "|".join(NAMED_INTERVALS)
        raise InputError(f"/{path}: {INTERVAL_XATTR}={text!r}: expected {names} or a"
                         " positive number of days")
    return days


def xattr_components(tree: FileTree) -> tuple[dict[str, str], dict[str, int]]:
    """Path -> component name from ``user.component`` (own, else the nearest directory
    above that has one, as chunkah inherits it), and component -> update interval in
    days from ``user.update-interval`` on any of its paths (not inherited; two different
    values for one component are an error, as in chunkah)."""
    own: dict[str, str] = {}
    for path, entry in tree.entries.items():
        if entry.xattrs:
            name = _xattr_text(entry, COMPONENT_XATTR)
            if name is not None:
                name = name.strip()
                if not name or len(name) > MAX_COMPONENT_CHARS or not name.isprintable():
                    raise InputError(f"/{path}: {COMPONENT_XATTR}={name!r}: expected 1-"
                                     f"{MAX_COMPONENT_CHARS} printable characters")
                own[path] = name
    if not own:
        return {}, {}
    dirs = {p: c for p, c in own.items() if tree.entries[p].kind == "dir"}
    memo: dict[str, str | None] = {}

    def inherited(path: str) -> str | None:
        todo: list[str] = []
        found: str | None = None
        cur = parent(path)
        while cur:
            if cur in memo:
                found = memo[cur]
                break
            if cur in dirs:
                found = dirs[cur]
                break
            todo.append(cur)
            cur = parent(cur)
        for p in todo:
            memo[p] = found
        return found

    out: dict[str, str] = {}
    for path in tree.entries:
        comp = own.get(path) or (inherited(path) if dirs else None)
        if comp is not None:
            out[path] = comp
    intervals: dict[str, int] = {}
    where: dict[str, str] = {}
    for path in sorted(out, key=encode_path):
        entry = tree.entries[path]
        text = _xattr_text(entry, INTERVAL_XATTR) if entry.xattrs else None
        if text is None:
            continue
        comp, days = out[path], parse_interval(path, text)
        if intervals.setdefault(comp, days) != days:
            raise InputError(
                f"component {comp!r}: conflicting {INTERVAL_XATTR} on /{where[comp]}"
                f" ({intervals[comp]} days) and /{path} ({days} days)"
            )
        where.setdefault(comp, path)
    return out, intervals


class _Grouper:
    def __init__(
        self, tree: FileTree, ownership: Ownership, rules: Rules, derived: DerivedMode
    ) -> None:
        self.tree = tree
        self.own = ownership
        self.derived_mode = derived
        self.rules = rules
        self.rule_names = [Glob.of(r.packages) for r in rules.groups]
        self.rule_sources = [Glob.of(r.sources) for r in rules.groups]
        self.rule_paths = [r.path_glob() for r in rules.groups]
        self.buckets = [(b, b.path_glob()) for b in rules.buckets if not b.catch_all]
        self.catch_all = rules.buckets[-1]
        self.pkg_group: dict[str, str] = {}
        self.derive = Derivation(tree, ownership)
        self.components, self.intervals = xattr_components(tree)

    # -- packages -> group keys

    def assign_packages(self) -> None:
        pkg_paths: dict[str, list[str]] = {}
        if any(r.paths for r in self.rules.groups):
            for path, keys in self.own.owners.items():
                for k in keys:
                    pkg_paths.setdefault(k, []).append(path)
        for key in sorted(self.own.packages):
            pkg = self.own.packages[key]
            self.pkg_group[key] = self._package_key(pkg, pkg_paths.get(key, ()))

    def _package_key(self, pkg: Package, paths: Iterable[str]) -> str:
        source = pkg.source or pkg.name
        regs: list[Entry] | None = None
        for i, rule in enumerate(self.rules.groups):
            if self.rule_names[i](pkg.name) or self.rule_sources[i](source):
                return RULE_PREFIX + rule.name
            if rule.paths:
                if regs is None:
                    regs = [e for p in paths if (e := self.tree.get(p)) and e.kind == "reg"]
                if self._mostly_under(regs, self.rule_paths[i]):
                    return RULE_PREFIX + rule.name
        if self.rules.group_by == "name":
            return NAME_PREFIX + pkg.name
        return SOURCE_PREFIX + source

    @staticmethod
    def _mostly_under(regs: list[Entry], glob: Glob) -> bool:
        """More than half the package's regular-file bytes (count, if all empty) match."""
        if not regs:
            return False
        total = sum(e.size for e in regs)
        inside = [e for e in regs if glob(e.path)]
        if not inside:
            return False
        if total == 0:
            return 2 * len(inside) > len(regs)
        return 2 * sum(e.size for e in inside) > total

    # -- paths -> group keys

    def owned_group(self, path: str) -> str | None:
        keys = self.own.owners.get(path)
        if not keys:
            return None
        groups = sorted({self.pkg_group[k] for k in keys if k in self.pkg_group})
        return groups[0] if groups else None

    def derived_group(self, path: str) -> str | None:
        origin = self.derive(path)
        return self.owned_group(origin) if origin is not None else None

    def path_group(self, path: str, entry: Entry) -> str:
        component = self.components.get(path)
        if component is not None:
            return COMPONENT_PREFIX + component
        if path in self.own.pkgdb_paths:
            return PKGDB_KEY
        owned = self.owned_group(path)
        if owned is not None:
            return owned
        for bucket, glob in self.buckets:
            if glob(path):
                return BUCKET_PREFIX + bucket.name
        derived = self.derived_group(path)
        if derived is not None:
            return derived if self.derived_mode == "follow" else DERIVED_KEY
        limit = self.rules.big_file_threshold
        if limit > 0 and entry.kind == "reg" and entry.size > limit:
            return BIG_PREFIX + path
        return BUCKET_PREFIX + self.catch_all.name


def _move_hardlinks(order: list[str], assigned: dict[str, str], tree: FileTree) -> None:
    first: dict[int, str] = {}
    for path in order:
        link = tree.entries[path].link
        if link:
            if link in first:
                assigned[path] = assigned[first[link]]
            else:
                first[link] = path


def build_groups(
    tree: FileTree, ownership: Ownership, rules: Rules, *, derived: DerivedMode = "follow"
) -> tuple[Group, ...]:
    """Every tree path in exactly one group; groups sorted by key, none empty.

    ``derived="follow"`` puts derived files in their origin's group: best when the
    mtime policy clamps them like their origin (see :func:`derived_owners`); with
    ``"separate"`` they all form one ``derived`` group (kind bucket), which is what to
    use while their metadata still changes on every build.
    """
    g = _Grouper(tree, ownership, rules, derived)
    g.assign_packages()
    order = tree.paths()
    assigned = {p: g.path_group(p, tree.entries[p]) for p in order}
    _move_hardlinks(order, assigned, tree)

    paths: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    links: dict[str, set[int]] = {}
    for p in order:
        key = assigned[p]
        paths.setdefault(key, []).append(p)
        e = tree.entries[p]
        if e.kind == "reg":
            if e.link:
                seen = links.setdefault(key, set())
                if e.link in seen:
                    continue
                seen.add(e.link)
            sizes[key] = sizes.get(key, 0) + e.size

    members: dict[str, list[Package]] = {}
    for pkey, gkey in g.pkg_group.items():
        members.setdefault(gkey, []).append(ownership.packages[pkey])
    pkg_keys: dict[str, list[str]] = {}
    for pkey, gkey in g.pkg_group.items():
        pkg_keys.setdefault(gkey, []).append(pkey)

    rules_by_key: dict[str, GroupRule | BucketRule] = {}
    for r in rules.groups:
        rules_by_key[RULE_PREFIX + r.name] = r
    for b in rules.buckets:
        rules_by_key[BUCKET_PREFIX + b.name] = b

    out: list[Group] = []
    for key in sorted(paths):
        nbytes = sizes.get(key, 0)
        pkgs = members.get(key, [])
        interval = None
        if key.startswith(COMPONENT_PREFIX):
            # The packages whose files the author moved here say when they change.
            interval = g.intervals.get(key[len(COMPONENT_PREFIX):])
            owned = {k for p in paths[key] for k in ownership.owners.get(p, ())}
            pkgs = [ownership.packages[k] for k in sorted(owned) if k in ownership.packages]
            pkg_keys[key] = sorted(owned)
            evrs = sorted({f"{p.name}={p.evr}" for p in pkgs})
            versions = (*evrs, f"{len(paths[key])} paths {nbytes} bytes")
        elif pkgs:
            versions = tuple(sorted({f"{p.name}={p.evr}" for p in pkgs}))
        else:
            versions = (f"{len(paths[key])} paths {nbytes} bytes",)
        rule = rules_by_key.get(key)
        out.append(
            Group(
                key=key,
                kind=_kind(key),
                packages=tuple(sorted(pkg_keys.get(key, ()))),
                versions=versions,
                paths=tuple(paths[key]),
                bytes=nbytes,
                frequency=rule.frequency if rule else None,
                dedicated=rule.dedicated if rule else False,
                update_interval=interval,
            )
        )
    return tuple(out)


def _kind(key: str) -> GroupKind:
    if key == PKGDB_KEY:
        return "pkgdb"
    if key.startswith(COMPONENT_PREFIX):
        return "component"
    if key == DERIVED_KEY:
        return "bucket"
    if key.startswith(BUCKET_PREFIX):
        return "bucket"
    if key.startswith(BIG_PREFIX):
        return "bigfile"
    return "package"
