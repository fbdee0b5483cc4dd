"""Split big package groups into parts by how their files behave (docs/planner.md, "Splitting").

The idea: an upgraded package comes with new bytes for its compiled objects, its changelog,
its ``md5sums`` and usually its man pages, while its scripts change only when a fix touches
them and its data, docs and locales hardly ever do. Measured on real Debian security updates
it does not hold well enough to pay (docs/planner.md, "Splitting"), so the shipped rules
leave ``split_threshold`` at 0 and nothing is split unless a rules file asks for it. As one
group, every upgrade pulls all of a package; split, a part that did not change can keep a
layer that stays (when its tar entries stay byte-identical, which needs the unchanged files'
mtimes carried over).

Every path of a package group at least ``Rules.split_threshold`` bytes big gets a file
class from its path, type and mode (no file is read: planning does no I/O), and the class
a part:

* ``bin`` (expected to change with every upgrade): compiled objects (``*.so*``, ``*.a``,
  ``*.o``, ``*.ko*``), bytecode (``*.bc``, ``*.class``, ``*.jar``, ``*.elc``, owned ``*.pyc``
  ...), executables and files in ``bin``/``sbin``/``libexec`` that are not scripts,
  ``usr/lib/debug``, paths naming the package's full version-release (they are new paths
  after any upgrade), changelogs and NEWS files, man and info pages, dpkg's ``info/PKG.*``;
* ``code``: interpreted source (``*.py``, ``*.pm``, ``*.pl``, ``*.sh`` ...); the
  ``__pycache__`` files derived from them follow them;
* ``data``: docs, locales, icons, everything else, and the group's directories.

A part smaller than ``threshold / 16`` joins the nearest more volatile part (or, when it is
the most volatile, the next one); a group left with one part stays whole. Every hardlink set
stays in the part of its first path. Dedicated groups are never split. A group split by the
previous build stays split down to half the threshold, so a package hovering around the
threshold does not move back and forth.

Each part is a :class:`~pkgchunk.plan.groups.Group` keyed ``PARENT#PART`` with the parent's
packages; its version is a fingerprint of its entries (path, type, mode, owner, size, mtime,
link target and the package database's file digest), so the history in the plan label
records, per part, in how many builds it really changed. Its prior change probability is
the parent's times :data:`PART_FACTOR`; after a few builds the history decides
(plan/frequency.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from pkgchunk.pkgdb.model import FLAG_DOC, FLAG_LICENSE, Ownership, PkgFile
from pkgchunk.plan.groups import Derivation, Group
from pkgchunk.plan.planner import PreviousPlan
from pkgchunk.plan.rules import Rules
from pkgchunk.tree import Entry, FileTree

#: Separates a parent group key from its part in a part's key (never in a package name).
SEP = "#"
#: Most volatile first; a too-small part joins a more volatile neighbour.
PARTS = ("bin", "code", "data")
#: File class -> part.
PART_OF_CLASS: Mapping[str, str] = {
    "binary": "bin",
    "versioned": "bin",
    "changelog": "bin",
    "manual": "bin",
    "pkgmeta": "bin",
    "script": "code",
    "doc": "data",
    "locale": "data",
    "data": "data",
    "dirs": "data",
}
#: Prior change probability of a part, relative to its parent's (until history says more).
PART_FACTOR: Mapping[str, float] = {"bin": 1.0, "code": 0.5, "data": 0.2}
#: A part below ``threshold // MIN_PART_DIVISOR`` bytes is not worth its own group.
MIN_PART_DIVISOR = 16
#: A group split by the previous build stays split down to ``threshold // KEEP_DIVISOR``.
KEEP_DIVISOR = 2

_BINARY_NAME = re.compile(
    r"\.(?:so(?:\.[0-9][^/]*)?|a|o|ko(?:\.[a-z0-9]+)?|node|cmxs|cmx|cmi|bc|class|jar|elc|beam"
    r"|pyc)$"
)
_SCRIPT_SUFFIXES = (
    ".py", ".pm", ".pl", ".pod", ".ph", ".sh", ".bash", ".rb", ".lua", ".tcl", ".js", ".php",
    ".el", ".awk", ".sed",
)
_CHANGELOG_NAME = re.compile(r"^(?:changelog|news|changes)(?:[._-].*)?$")
_MANUAL_DIRS = ("usr/share/man/", "usr/share/info/", "usr/man/")
_LOCALE_DIRS = ("usr/share/locale/", "usr/lib/locale/", "usr/share/i18n/")
_DOC_DIRS = ("usr/share/doc/", "usr/share/help/", "usr/share/gtk-doc/", "usr/share/licenses/")
_PKGMETA_DIRS = ("var/lib/dpkg/info/",)
_DEBUG_DIRS = ("usr/lib/debug/",)
#: Executables live here, whatever their mode says (a script here has no script suffix
#: either, mostly; calling it volatile costs little).
_BIN_DIRS = ("usr/bin/", "usr/sbin/", "bin/", "sbin/", "usr/libexec/", "usr/games/")


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One part of a split group: its key, size, and bytes per file class (why it is here)."""

    part: str
    key: str
    files: int
    bytes: int
    classes: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class SplitInfo:
    """A package group that was split, and why: its size against the threshold it passed."""

    group: str
    packages: tuple[str, ...]
    bytes: int
    threshold: int
    parts: tuple[PartInfo, ...]

    def reason(self) -> str:
        """One line: ``58.1M >= 4.0M: bin 26.6M (binary, manual), data 31.5M (data, doc)``."""
        parts = ", ".join(
            f"{p.part} {_mib(p.bytes)} ({', '.join(c for c, _ in p.classes)})" for p in self.parts
        )
        return f"{_mib(self.bytes)} >= {_mib(self.threshold)}: {parts}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}M"


def parent_key(key: str) -> str:
    """The group a part belongs to (the key itself when it is not a part)."""
    head, sep, tail = key.rpartition(SEP)
    return head if sep and tail in PARTS else key


def part_of(key: str) -> str:
    """The part a key names ('' when it is not a part)."""
    head, sep, tail = key.rpartition(SEP)
    return tail if sep and head and tail in PARTS else ""


def _full_versions(ownership: Ownership, packages: Iterable[str]) -> tuple[str, ...]:
    """Version-release strings (no epoch) that name a path after this exact build only."""
    out = set()
    for k in packages:
        pkg = ownership.packages.get(k)
        if pkg is None:
            continue
        full = f"{pkg.version}-{pkg.release}" if pkg.release else pkg.version
        if len(full) >= 3:
            out.add(full)
    return tuple(sorted(out))


def classify(
    path: str,
    entry: Entry,
    versions: Sequence[str] = (),
    pkgfile: PkgFile | None = None,
) -> str:
    """The behaviour class of one path of a package (see the module docstring)."""
    if entry.kind == "dir":
        return "dirs"
    if path.startswith(_PKGMETA_DIRS):
        return "pkgmeta"
    if any(v in part for v in versions for part in path.split("/")):
        return "versioned"
    name = path.rpartition("/")[2]
    lower = name.lower()
    if _CHANGELOG_NAME.match(lower):
        return "changelog"
    if path.startswith(_MANUAL_DIRS):
        return "manual"
    if _BINARY_NAME.search(lower) or path.startswith(_DEBUG_DIRS):
        return "binary"
    script = lower.endswith(_SCRIPT_SUFFIXES)
    if entry.kind == "reg" and not script and (entry.mode & 0o111 or path.startswith(_BIN_DIRS)):
        return "binary"
    if path.startswith(_LOCALE_DIRS) or lower.endswith(".mo"):
        return "locale"
    flags = pkgfile.flags if pkgfile is not None else 0
    if path.startswith(_DOC_DIRS) or flags & (FLAG_DOC | FLAG_LICENSE):
        return "doc"
    if script:
        return "script"
    return "data"


def _fingerprint(paths: Sequence[str], tree: FileTree, files: Mapping[str, PkgFile]) -> str:
    """Changes when any tar entry of the part would: entry metadata plus the db digest."""
    h = hashlib.sha256()
    for p in paths:
        e = tree.entries[p]
        f = files.get(p)
        h.update(
            f"{p}\0{e.kind}\0{e.mode}\0{e.uid}\0{e.gid}\0{e.size}\0{e.mtime}\0{e.target}\0"
            f"{f.digest if f is not None else ''}\n".encode("utf-8", "surrogateescape")
        )
    return "~" + h.hexdigest()[:12]


class _Splitter:
    def __init__(
        self, tree: FileTree, ownership: Ownership, rules: Rules, previous: PreviousPlan | None
    ) -> None:
        self.tree = tree
        self.own = ownership
        self.threshold = rules.split_threshold
        self.derive = Derivation(tree, ownership)
        self.was_split = (
            {parent_key(k) for k in previous.history if part_of(k)} if previous else set()
        )

    def eligible(self, g: Group) -> bool:
        if self.threshold <= 0 or g.kind != "package" or g.dedicated or g.part:
            return False
        limit = self.threshold // KEEP_DIVISOR if g.key in self.was_split else self.threshold
        return g.bytes >= limit

    def split(self, g: Group) -> tuple[list[Group], SplitInfo] | None:
        files: dict[str, PkgFile] = {}
        for k in g.packages:
            pkg = self.own.packages.get(k)
            for f in pkg.files if pkg is not None else ():
                files.setdefault(f.path.lstrip("/"), f)
        versions = _full_versions(self.own, g.packages)
        members = set(g.paths)
        cls: dict[str, str] = {}
        for p in g.paths:
            e = self.tree.entries[p]
            cls[p] = classify(p, e, versions, files.get(p))
        for p in g.paths:  # derived files (pyc) take their origin's class
            if p not in self.own.owners:
                origin = self.derive(p)
                if origin is not None and origin in members and origin in cls:
                    cls[p] = cls[origin]
        part = {p: PART_OF_CLASS[c] for p, c in cls.items()}
        first: dict[int, str] = {}
        for p in g.paths:  # canonical order: a hardlink set stays with its first path
            link = self.tree.entries[p].link
            if link:
                part[p] = part[first.setdefault(link, p)]
        sizes = dict.fromkeys(PARTS, 0)
        counted: set[int] = set()
        for p in g.paths:
            e = self.tree.entries[p]
            if e.kind != "reg" or (e.link and e.link in counted):
                continue
            if e.link:
                counted.add(e.link)
            sizes[part[p]] += e.size
        present = [x for x in PARTS if any(part[p] == x for p in g.paths)]
        minimum = self.threshold // MIN_PART_DIVISOR
        for x in reversed(PARTS):
            if x not in present or sizes[x] >= minimum or len(present) == 1:
                continue
            i = present.index(x)
            into = present[i - 1] if i > 0 else present[i + 1]
            for p in g.paths:
                if part[p] == x:
                    part[p] = into
            sizes[into] += sizes[x]
            present.remove(x)
        if len(present) < 2:
            return None
        out: list[Group] = []
        infos: list[PartInfo] = []
        for x in present:
            paths = tuple(p for p in g.paths if part[p] == x)
            key = f"{g.key}{SEP}{x}"
            by_class: dict[str, int] = {}
            for p in paths:
                e = self.tree.entries[p]
                by_class[cls[p]] = by_class.get(cls[p], 0) + (e.size if e.kind == "reg" else 0)
            classes = tuple(sorted(by_class.items(), key=lambda kv: (-kv[1], kv[0])))
            out.append(
                replace(
                    g, key=key, paths=paths, bytes=sizes[x], part=x,
                    versions=(_fingerprint(paths, self.tree, files),),
                )
            )
            infos.append(PartInfo(x, key, len(paths), sizes[x], classes))
        info = SplitInfo(g.key, g.packages, g.bytes, self.threshold, tuple(infos))
        return out, info


def split_groups(
    groups: Sequence[Group],
    tree: FileTree,
    ownership: Ownership,
    rules: Rules,
    previous: PreviousPlan | None = None,
) -> tuple[tuple[Group, ...], tuple[SplitInfo, ...]]:
    """The groups with every big package group replaced by its parts (sorted by key), and
    what was split. Deterministic in (groups, tree, ownership, threshold, previous keys)."""
    s = _Splitter(tree, ownership, rules, previous)
    out: list[Group] = []
    infos: list[SplitInfo] = []
    for g in groups:
        done = s.split(g) if s.eligible(g) else None
        if done is None:
            out.append(g)
        else:
            out.extend(done[0])
            infos.append(done[1])
    return tuple(sorted(out, key=lambda g: g.key)), tuple(infos)
