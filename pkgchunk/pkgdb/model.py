"""What package databases yield, and the small Protocol every reader implements.

Readers look only inside the image (a :class:`~pkgchunk.tree.FileTree`), never
at the host, and never run ``rpm`` or ``dpkg``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pkgchunk.tree import FileTree

Format = Literal["rpm-sqlite", "rpm-bdb", "rpm-ndb", "dpkg", "dpkg-status.d"]

#: Bounds on one database's file list (real ones: well under a million files and a few
#: hundred MiB of paths). rpm headers share directory names between files, so without
#: them a 100 KiB header could expand into gigabytes of paths.
MAX_DB_FILES = 5_000_000
MAX_DB_PATH_BYTES = 512 << 20

# RPM file flags we care about (rpm's RPMFILE_* bits).
FLAG_CONFIG = 1 << 0
FLAG_DOC = 1 << 1
FLAG_MISSINGOK = 1 << 3
FLAG_NOREPLACE = 1 << 4
FLAG_GHOST = 1 << 6
FLAG_LICENSE = 1 << 7


@dataclass(frozen=True, slots=True)
class PkgFile:
    """A file entry as the database records it. ``path`` is absolute ('/usr/bin/ls')."""

    path: str
    size: int = 0
    mode: int = 0
    digest: str = ""
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Package:
    """One installed package. ``release`` is '' for dpkg; ``epoch`` None when absent.

    ``source`` is the source package name (RPM SOURCERPM without
    '-VERSION-RELEASE.src.rpm'; a deb's ``Source:`` without its version, or its own
    name). ``changelog_times`` are Unix times of changelog entries, newest first,
    the signal for how often the package changes.
    """

    name: str
    version: str
    arch: str
    source: str
    epoch: int | None = None
    release: str = ""
    size: int = 0
    buildtime: int | None = None
    installtime: int | None = None
    changelog_times: tuple[int, ...] = ()
    license: str = ""
    files: tuple[PkgFile, ...] = ()
    db: str = ""

    @property
    def evr(self) -> str:
        e = f"{self.epoch}:" if self.epoch else ""
        r = f"-{self.release}" if self.release else ""
        return f"{e}{self.version}{r}"

    @property
    def key(self) -> str:
        """Unique within one image: 'name:arch' for dpkg, NEVRA for RPM."""
        if self.release or self.db.startswith("rpm"):
            nevr = f"{self.name}-{self.evr}"
            return f"{nevr}.{self.arch}" if self.arch else nevr
        return f"{self.name}:{self.arch}" if self.arch else self.name


@dataclass(frozen=True, slots=True)
class PackageDb:
    """One database found in the image: its format, where, and what it lists.

    ``paths`` are the tree paths of the database files themselves (they change on
    every update, so they form their own category).
    """

    format: Format
    path: str
    packages: tuple[Package, ...]
    paths: tuple[str, ...] = ()


class PackageDbReader(Protocol):
    """A reader for one on-disk database format."""

    format: Format

    def detect(self, tree: FileTree) -> list[str]:
        """Tree paths where this format's database exists (already symlink-resolved)."""
        ...

    def read(self, tree: FileTree, path: str) -> PackageDb:
        """Read the database at ``path``; raise PkgdbError naming the file when corrupt."""
        ...


@dataclass(frozen=True)
class Ownership:
    """Every path of the tree mapped to zero, one or several owning packages.

    ``owners`` maps tree path -> package keys (paths without owners are absent).
    ``pkgdb_paths`` are the database files (their own category). ``packages``
    maps package key -> Package.
    """

    dbs: tuple[PackageDb, ...]
    packages: Mapping[str, Package]
    owners: Mapping[str, tuple[str, ...]]
    pkgdb_paths: frozenset[str] = field(default_factory=frozenset)
    warnings: tuple[str, ...] = ()
