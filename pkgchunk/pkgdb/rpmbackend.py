"""Which rpm database an image really uses, when it holds more than one format.

rpm reads exactly one backend: the one its ``%_db_backend`` macro names. An image that
was converted (``rpmdb --rebuilddb`` to sqlite) or had a database copied in often keeps the
old file next to the new one, e.g. a stale Berkeley DB ``Packages`` beside the active
``rpmdb.sqlite``. Reading both would put packages that are no longer installed into the
plan and the SBOM. So: the format the image's own macros files name, else the newest format
present (sqlite, then ndb, then bdb: the order rpm's defaults moved in); the others are
ignored with a warning naming the file.
"""

from __future__ import annotations

import re

from pkgchunk.pkgdb.model import Format
from pkgchunk.tree import FileTree

#: rpm's macro files, lowest precedence first (a later definition wins), as rpm's
#: ``macrofiles`` default lists them; ``*`` is a glob of the directory's files.
MACRO_FILES = (
    "usr/lib/rpm/macros",
    "usr/lib/rpm/macros.d/*",
    "usr/lib/rpm/redhat/macros",
    "usr/lib/rpm/suse/macros",
    "etc/rpm/macros.*",
    "etc/rpm/macros",
)
#: Newest first.
NEWEST: tuple[Format, ...] = ("rpm-sqlite", "rpm-ndb", "rpm-bdb")
BACKENDS: dict[str, Format] = {
    "sqlite": "rpm-sqlite", "ndb": "rpm-ndb", "bdb": "rpm-bdb", "bdb_ro": "rpm-bdb",
}
#: Macro files larger than this are not read (they are a few KiB).
MAX_MACRO_BYTES = 1 << 20
_DEFINITION = re.compile(rb"^[ \t]*%_db_backend[ \t]+([A-Za-z_]+)[ \t]*$", re.MULTILINE)


def _macro_paths(tree: FileTree) -> list[str]:
    out: list[str] = []
    for pattern in MACRO_FILES:
        if pattern.endswith("*"):
            head = pattern[:-1]
            directory = head.rpartition("/")[0]
            out.extend(sorted(
                p for p in tree.entries
                if p.startswith(head) and p.rpartition("/")[0] == directory
            ))
        else:
            out.append(pattern)
    return out


def db_backend(tree: FileTree) -> tuple[Format, str] | None:
    """The format the image's macros name, and the file that named it last."""
    found: tuple[Format, str] | None = None
    for path in _macro_paths(tree):
        real = tree.resolve(path)
        entry = tree.get(real) if real else None
        if entry is None or entry.kind != "reg" or entry.size > MAX_MACRO_BYTES:
            continue
        with tree.open(entry.path) as f:
            text = f.read()
        for match in _DEFINITION.finditer(text):
            fmt = BACKENDS.get(match.group(1).decode("ascii"))
            if fmt is not None:
                found = (fmt, path)
    return found


def choose(tree: FileTree, present: set[Format]) -> tuple[Format | None, str]:
    """The rpm format to read among ``present`` (two or more), and why."""
    named = db_backend(tree)
    if named is not None and named[0] in present:
        return named[0], f"%_db_backend in /{named[1]}"
    newest = next(f for f in NEWEST if f in present)
    why = "the newest format present"
    if named is not None:
        why += f" (/{named[1]} names {named[0]}, which is not there)"
    return newest, why
