"""The three rpmdb formats as :class:`PackageDbReader`s: sqlite, Berkeley DB, ndb.

Each reader copies the database out of the image into a private temporary
directory first: the tree's streams are not seekable, sqlite needs a real file,
and the image copy must never be touched (sqlite would create -shm files).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import struct
import tempfile
import urllib.parse
from collections.abc import Generator
from pathlib import Path
from typing import BinaryIO

from pkgchunk.errors import PkgdbError
from pkgchunk.pkgdb import bdb, ndb
from pkgchunk.pkgdb.model import MAX_DB_FILES, MAX_DB_PATH_BYTES, Format, PackageDb, PackageDbReader
from pkgchunk.pkgdb.rpmheader import parse_package
from pkgchunk.tree import FileTree, join, parent

#: Directories rpm keeps its database in: Fedora 36+/SUSE, classic, rpm-ostree.
DB_DIRS = ("usr/lib/sysimage/rpm", "var/lib/rpm", "usr/share/rpm")

#: Files of an rpmdb directory besides the main database (all change on updates):
#: sqlite/ndb companions, locks, and the Berkeley DB index databases of any rpm version.
_COMPANIONS = frozenset(
    """rpmdb.sqlite rpmdb.sqlite-shm rpmdb.sqlite-wal rpmdb.sqlite-journal
    Packages.db Index.db Packages .rpm.lock .dbenv.lock
    Name Basenames Group Requirename Providename Conflictname Obsoletename
    Triggername Dirnames Installtid Removetid Sigmd5 Sha1header Filedigests
    Filemd5s Depends Pubkeys Provideversion Requireversion Recommendname
    Suggestname Supplementname Enhancename Filetriggername
    Transfiletriggername Packagecolor Nvra Os Arch Release Version""".split()  # noqa: SIM905
)
#: (package index, header blob) pairs as a database yields them.
Blobs = Generator[tuple[int, bytes], None, None]
_BDB_ENV = re.compile(r"__db\.\d+\Z")


def db_files(tree: FileTree, dbdir: str, main: str) -> tuple[str, ...]:
    """The database file ``main`` and every rpmdb companion file in ``dbdir``."""
    others = []
    prefix = f"{dbdir}/" if dbdir else ""
    for path, entry in tree.entries.items():
        if entry.kind != "reg" or parent(path) != dbdir or path == main:
            continue
        name = path[len(prefix) :]
        if name in _COMPANIONS or _BDB_ENV.match(name):
            others.append(path)
    return (main, *sorted(others))


def _label(tree: FileTree, path: str) -> str:
    return f"{tree.label or 'image'}: {path}"


def _copy(tree: FileTree, path: str, dest: Path) -> int:
    """Copy a tree file to ``dest``; returns its size."""
    with tree.open(path) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        return out.tell()


class _RpmReader:
    """Common detection and package assembly; subclasses yield (index, blob) pairs."""

    format: Format
    filename: str

    def detect(self, tree: FileTree) -> list[str]:
        found: list[str] = []
        for d in DB_DIRS:
            path = tree.resolve(join(d, self.filename))
            if path is None or path in found:
                continue
            entry = tree.get(path)
            if entry is not None and entry.kind == "reg":
                found.append(path)
        return found

    def read(self, tree: FileTree, path: str) -> PackageDb:
        path = tree.resolve(path) or path  # tolerate a path through the image's links
        name = _label(tree, path)
        packages = []
        files = paths = 0
        with (
            tempfile.TemporaryDirectory(prefix="pkgchunk-rpmdb-") as tmp,
            contextlib.closing(self._blobs(tree, path, name, Path(tmp))) as blobs,
        ):
            for idx, blob in blobs:
                pkg = parse_package(blob, f"{name}: package {idx}", self.format)
                files += len(pkg.files)
                paths += sum(len(f.path) for f in pkg.files)
                if files > MAX_DB_FILES or paths > MAX_DB_PATH_BYTES:
                    raise PkgdbError(f"{name}: more than {MAX_DB_FILES} files or"
                                     f" {MAX_DB_PATH_BYTES} bytes of file paths")
                packages.append(pkg)
        return PackageDb(
            format=self.format,
            path=path,
            packages=tuple(packages),
            paths=db_files(tree, parent(path), path),
        )

    def _blobs(self, tree: FileTree, path: str, name: str, tmp: Path) -> Blobs:
        raise NotImplementedError


class SqliteReader(_RpmReader):
    """``rpmdb.sqlite``: table ``Packages(hnum, blob)`` (rpm >= 4.16)."""

    format: Format = "rpm-sqlite"
    filename = "rpmdb.sqlite"

    def _blobs(self, tree: FileTree, path: str, name: str, tmp: Path) -> Blobs:
        db = tmp / "rpmdb.sqlite"
        _copy(tree, path, db)
        # Committed transactions may still sit in the write-ahead log: copy it along
        # and let sqlite replay it (into our private copy) instead of ignoring it.
        wal = tree.get(path + "-wal")
        immutable = "&immutable=1"
        if wal is not None and wal.kind == "reg" and wal.size > 0:
            _copy(tree, path + "-wal", tmp / "rpmdb.sqlite-wal")
            immutable = ""
        uri = f"file:{urllib.parse.quote(str(db))}?mode=ro{immutable}"
        try:
            conn = sqlite3.connect(uri, uri=True)
        except sqlite3.Error as e:
            raise PkgdbError(f"{name}: cannot open sqlite database: {e}") from e
        try:
            for hnum, blob in conn.execute("SELECT hnum, blob FROM Packages ORDER BY hnum"):
                if not isinstance(hnum, int) or not isinstance(blob, bytes):
                    raise PkgdbError(f"{name}: package {hnum!r}: row is not (integer, blob)")
                yield hnum, blob
        except sqlite3.Error as e:
            raise PkgdbError(f"{name}: {e}") from e
        finally:
            conn.close()


def _spool(tree: FileTree, path: str, tmp: Path) -> tuple[BinaryIO, int]:
    dest = tmp / "db"
    size = _copy(tree, path, dest)
    return open(dest, "rb"), size


class BdbReader(_RpmReader):
    """``Packages``: Berkeley DB hash, key = header instance (uint32), key 0 = bookkeeping."""

    format: Format = "rpm-bdb"
    filename = "Packages"

    def _blobs(self, tree: FileTree, path: str, name: str, tmp: Path) -> Blobs:
        f, size = _spool(tree, path, tmp)
        with f:
            db = bdb.HashDb(f, size, name)
            seen: set[int] = set()
            for key, data in db.items():
                if len(key) != 4:
                    raise PkgdbError(f"{name}: record key of {len(key)} bytes, expected 4")
                (instance,) = struct.unpack(db.order + "I", key)
                if instance == 0:
                    continue  # holds the highest instance number, not a package
                if instance in seen:
                    raise PkgdbError(f"{name}: package {instance} appears twice")
                seen.add(instance)
                yield instance, data


class NdbReader(_RpmReader):
    """``Packages.db``: rpm's own ndb format (SUSE since SLE 15 SP3 / openSUSE)."""

    format: Format = "rpm-ndb"
    filename = "Packages.db"

    def _blobs(self, tree: FileTree, path: str, name: str, tmp: Path) -> Blobs:
        f, size = _spool(tree, path, tmp)
        with f:
            yield from ndb.iter_blobs(f, size, name)


READERS: list[PackageDbReader] = [SqliteReader(), BdbReader(), NdbReader()]

__all__ = ["READERS", "BdbReader", "NdbReader", "SqliteReader", "db_files"]
