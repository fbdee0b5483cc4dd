"""Unpack oci-archive / docker-archive tarballs into a private temp dir, hostile-safe.

Only directories and regular files are created, under names normalised inside
the destination; symlinks and hardlinks in the archive (``docker save`` links
duplicate layers) become aliases resolved by :meth:`Unpacked.path`, never
filesystem links, so nothing can be written or read outside the temp dir.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile

from pkgchunk.errors import InputError
from pkgchunk.oci.targuard import GuardedTarInfo, HugeHeader
from pkgchunk.tree import MAX_SYMLINK_HOPS, normalize

_COPY_CHUNK = 1 << 20


class Unpacked:
    """The regular files of an archive, on disk under ``root``."""

    def __init__(self, label: str, root: str) -> None:
        self.label = label
        self.root = root
        self.aliases: dict[str, str] = {}

    def path(self, name: str, what: str) -> str:
        """On-disk path of archive member ``name`` (following the archive's own links)."""
        rel = normalize(name)
        if rel is None or not rel:
            raise InputError(f"{self.label}: {what} {name!r} is not a path inside the archive")
        for _ in range(MAX_SYMLINK_HOPS):
            nxt = self.aliases.get(rel)
            if nxt is None:
                break
            rel = nxt
        full = os.path.join(self.root, rel)
        if not os.path.isfile(full):
            raise InputError(f"{self.label}: {what} {name!r} is missing from the archive")
        return full


def unpack(label: str, archive: str, dest: str, *, max_bytes: int) -> Unpacked:
    """Copy the archive's regular files into ``dest`` (created), at most ``max_bytes`` of them."""
    out = Unpacked(label, dest)
    os.makedirs(dest, exist_ok=True)
    total = 0
    try:
        with tarfile.open(
            archive, mode="r|*", encoding="utf-8", errors="surrogateescape", tarinfo=GuardedTarInfo
        ) as tf:
            for member in tf:
                tf.members.clear()  # type: ignore[attr-defined]  # streamed: keep none
                # Headers count too: an archive of millions of empty members is no smaller.
                if tf.offset > max_bytes:
                    raise InputError(
                        f"{label}: archive holds more than {max_bytes} bytes"
                        " (raise PKGCHUNK_MAX_IMAGE_BYTES)"
                    )
                rel = normalize(member.name)
                if rel is None:
                    raise InputError(f"{label}: member {member.name!r} escapes the archive root")
                if not rel:
                    continue
                if member.isdir():
                    _makedirs(label, dest, rel)
                elif member.issym() or member.islnk():
                    base = posixpath.dirname(rel) if member.issym() else ""
                    target = normalize(posixpath.join(base, member.linkname))
                    if target is None or member.linkname.startswith("/"):
                        raise InputError(
                            f"{label}: member {member.name!r} links outside the archive"
                        )
                    out.aliases[rel] = target
                elif member.isreg():
                    total += member.size
                    if total > max_bytes:
                        raise InputError(
                            f"{label}: archive holds more than {max_bytes} bytes"
                            " (raise PKGCHUNK_MAX_IMAGE_BYTES)"
                        )
                    out.aliases.pop(rel, None)
                    _write(label, dest, rel, tf, member)
    except HugeHeader as err:
        raise InputError(f"{label}: {err}") from None
    except FileNotFoundError:
        raise InputError(f"{label}: {archive} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{label}: {archive} is a directory, not an archive") from None
    except (tarfile.TarError, EOFError, ValueError, UnicodeError, OverflowError) as err:
        raise InputError(f"{label}: corrupt archive: {err}") from None
    except OSError as err:
        raise InputError(f"{label}: {err.strerror or err}") from None
    return out


def _makedirs(label: str, dest: str, rel: str) -> None:
    path = os.path.join(dest, rel)
    if os.path.isfile(path):
        os.unlink(path)  # a later directory member replaces an earlier file
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{label}: member {rel!r} conflicts with a file in the archive") from None


def _write(label: str, dest: str, rel: str, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    parent, _, _ = rel.rpartition("/")
    if parent:
        _makedirs(label, dest, parent)
    path = os.path.join(dest, rel)
    if os.path.isdir(path):
        shutil.rmtree(path)
    src = tf.extractfile(member)
    if src is None:
        raise InputError(f"{label}: member {rel!r} cannot be read")
    with src, open(path, "wb") as f:
        left = member.size
        while left > 0:
            chunk = src.read(min(_COPY_CHUNK, left))
            if not chunk:
                raise InputError(f"{label}: member {rel!r} is truncated")
            f.write(chunk)
            left -= len(chunk)
