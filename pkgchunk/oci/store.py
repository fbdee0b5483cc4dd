"""Writing an OCI image layout so that a failed write changes nothing anyone can see.

Blobs go to a temporary name inside ``blobs/sha256`` and are renamed to their
digest once complete (content-addressed, so an existing blob of the same name is
already the same bytes). ``index.json`` is the only file that makes an image
visible; it is rewritten last, via a temp file and ``os.replace``, under an
``flock`` on ``index.json.lock`` so concurrent writers to one layout do not lose
each other's tags. :class:`BlobStore` remembers what it created so a failed
write can take it back.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pkgchunk.errors import OutputError
from pkgchunk.oci.compress import copy_hashing
from pkgchunk.oci.mediatypes import OCI_INDEX

LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = "1.0.0"
INDEX_FILE = "index.json"
LOCK_FILE = "index.json.lock"
#: The tag an image written to ``oci:DIR`` without ``:TAG`` gets (and that reading
#: ``oci:DIR`` prefers when the layout holds several images), as docker's ``latest``:
#: an untagged entry would be added next to the others and make the next plain read fail.
DEFAULT_TAG = "latest"
REF_NAME = "org.opencontainers.image.ref.name"
TMP_PREFIX = ".tmp-"
#: mkstemp makes 0600 files; layouts are meant to be readable like skopeo's.
FILE_MODE = 0o644

_BUFSIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def canonical_json(doc: Any) -> bytes:
    """Compact JSON with sorted keys: the same document always gives the same digest."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def os_error(label: str, err: OSError) -> OutputError:
    """The one-line OutputError for a failed filesystem call."""
    where = err.filename if isinstance(err.filename, str) else label
    return OutputError(f"{label}: cannot write {where}: {err.strerror or err}")


class BlobStore:
    """``blobs/sha256`` of a layout being written; thread-safe.

    Until :meth:`keep` is called, :meth:`rollback` removes every temp file and
    every blob this store added (blobs that were already there stay). In a
    ``shared`` layout another writer may have started using a blob we added, so
    rollback removes only blobs no index entry reaches, under the index lock.
    """

    def __init__(self, layout: str, label: str, *, shared: bool = True) -> None:
        self.layout = layout
        self.label = label
        self.shared = shared
        self.dir = os.path.join(layout, "blobs", "sha256")
        self._lock = threading.Lock()
        self._temps: set[str] = set()
        self._created: list[str] = []
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as err:
            raise os_error(label, err) from err

    def path(self, digest: str) -> str:
        algo, _, hexdigest = digest.partition(":")
        if algo != "sha256" or len(hexdigest) != 64:
            raise OutputError(f"{self.label}: unsupported digest {digest}")
        return os.path.join(self.dir, hexdigest)

    def temp(self) -> tuple[str, BinaryIO]:
        """A new temp file in the blob directory, open for writing (registered for cleanup)."""
        try:
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self.dir)
        except OSError as err:
            raise os_error(self.label, err) from err
        with self._lock:
            self._temps.add(tmp)
        os.fchmod(fd, FILE_MODE)
        return tmp, os.fdopen(fd, "wb", buffering=_BUFSIZE)

    def commit(self, tmp: str, digest: str) -> str:
        """Rename a complete temp file to its digest; returns the blob path."""
        final = self.path(digest)
        with self._lock:
            try:
                if os.path.exists(final):
                    os.unlink(tmp)
                else:
                    os.replace(tmp, final)
                    self._created.append(final)
            except OSError as err:
                raise os_error(self.label, err) from err
            self._temps.discard(tmp)
        return final

    def discard(self, tmp: str) -> None:
        with self._lock:
            self._temps.discard(tmp)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)

    def put_bytes(self, data: bytes, media_type: str) -> Descriptor:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        tmp, f = self.temp()
        try:
            with f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            self.discard(tmp)
            raise os_error(self.label, err) from err
        self.commit(tmp, digest)
        return Descriptor(media_type, digest, len(data))

    def copy_in(self, src: str, digest: str, size: int) -> bool:
        """Copy an existing blob byte for byte; False (nothing kept) when it does not
        have the digest and size it claims."""
        tmp, f = self.temp()
        try:
            with f, open(src, "rb") as s:
                got, got_size = copy_hashing(s, f)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            self.discard(tmp)
            return False
        if got != digest or got_size != size:
            self.discard(tmp)
            return False
        self.commit(tmp, digest)
        return True

    def rollback(self) -> None:
        """Remove our temp files and the blobs we added that nothing references.

        Never raises: it runs while another error is on its way to the user.
        """
        with self._lock:
            temps, created = list(self._temps), list(self._created)
            self._temps.clear()
            self._created.clear()
        for path in temps:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if not created:
            return
        if not self.shared:
            _unlink_all(created)
            return
        try:
            with locked_index(self.layout, self.label):
                refs = referenced(self.layout)
                if refs is not None:
                    _unlink_all(p for p in created if os.path.basename(p) not in refs)
        except (OSError, OutputError):
            pass  # an unreferenced blob left behind is garbage, never damage

    def keep(self) -> None:
        with self._lock:
            self._created.clear()


def _unlink_all(paths: Iterable[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


#: Bounds on walking a layout's references (a hostile index must not make us loop).
_MAX_DOCS = 10_000
_MAX_DOC_BYTES = 16 << 20


def referenced(layout: str) -> set[str] | None:
    """Hex digests of every blob reachable from index.json (nested indexes, manifests,
    configs, layers); None when some document cannot be read, so nothing may go."""
    todo: list[Any] = []
    try:
        with open(os.path.join(layout, INDEX_FILE), "rb") as f:
            todo = [json.loads(f.read(_MAX_DOC_BYTES))]
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, RecursionError):
        return None
    refs: set[str] = set()
    docs = 0
    while todo:
        doc = todo.pop()
        docs += 1
        if docs > _MAX_DOCS or not isinstance(doc, dict):
            return None
        manifests, layers = doc.get("manifests") or [], doc.get("layers") or []
        config = doc.get("config")
        if not isinstance(manifests, list) or not isinstance(layers, list):
            return None
        # Entries of an index are documents to follow; a config and layers are leaves.
        edges = [(d, True) for d in manifests] + [(d, False) for d in [config, *layers] if d]
        for desc, follow in edges:
            digest = desc.get("digest") if isinstance(desc, dict) else None
            if not isinstance(digest, str) or not digest.startswith("sha256:"):
                return None
            hexd = digest[7:]
            if hexd in refs:
                continue
            refs.add(hexd)
            if not follow:
                continue
            try:
                with open(os.path.join(layout, "blobs", "sha256", hexd), "rb") as f:
                    todo.append(json.loads(f.read(_MAX_DOC_BYTES)))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, RecursionError):
                return None
    return refs


def init_layout(layout: str, label: str) -> str | None:
    """Make ``layout`` an OCI layout (created if missing).

    Returns the outermost directory this call created (to remove on failure), or None.
    """
    created: str | None = None
    if not os.path.lexists(layout):
        top = os.path.abspath(layout)
        while not os.path.lexists(os.path.dirname(top)) and os.path.dirname(top) != top:
            top = os.path.dirname(top)
        try:
            os.makedirs(layout)
            created = top
        except FileExistsError:
            pass  # another writer made it just now: it is theirs
        except OSError as err:
            raise os_error(label, err) from err
    if not os.path.isdir(layout):
        raise OutputError(f"{label}: {layout} exists and is not a directory")
    marker = os.path.join(layout, LAYOUT_FILE)
    if not os.path.exists(marker):
        try:
            _refuse_foreign(layout, label)
            # Concurrent writers into a new layout: one writes the marker, the others see it.
            with locked_index(layout, label):
                if not os.path.exists(marker):
                    _refuse_foreign(layout, label)
                    write_atomic(marker, canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
        except (OSError, OutputError) as err:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            if isinstance(err, OutputError):
                raise
            raise os_error(label, err) from err
    return created


def _refuse_foreign(layout: str, label: str) -> None:
    """A directory with files of its own is not ours to turn into a layout (our lock file
    and temp files, left by a writer killed at the wrong moment, do not count)."""
    if any(n != LOCK_FILE and not n.startswith(TMP_PREFIX) for n in os.listdir(layout)):
        raise OutputError(
            f"{label}: {layout} is not empty and has no {LAYOUT_FILE} file (not an OCI layout)"
        )


def remove_new_layout(layout: str, created: str, label: str) -> None:
    """Undo :func:`init_layout` after a failed write: remove the directories it created,
    unless another writer has meanwhile committed an image there (checked under the
    index lock). Never raises."""
    try:
        with locked_index(layout, label):
            if not os.path.exists(os.path.join(layout, INDEX_FILE)):
                shutil.rmtree(created, ignore_errors=True)
    except (OSError, OutputError):
        if not os.path.exists(os.path.join(layout, INDEX_FILE)):
            shutil.rmtree(created, ignore_errors=True)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``path`` via a temp file in the same directory and ``os.replace``."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked_index(layout: str, label: str) -> Iterator[None]:
    """Hold the layout's index lock (exclusive ``flock`` on ``index.json.lock``).

    The lock file is removed on release, so a layout is left without it. That is safe
    because every holder checks, once it has the lock, that the file it locked is still
    the one at the path (the previous holder may have unlinked it while we waited);
    if not, it locks the new file instead.
    """
    path = os.path.join(layout, LOCK_FILE)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise os_error(label, err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # unlinked by the holder before us: lock the current file
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)  # releases the lock


def read_index(layout: str, label: str) -> dict[str, Any]:
    """The layout's index.json (an empty index when there is none yet)."""
    path = os.path.join(layout, INDEX_FILE)
    try:
        with open(path, "rb") as f:
            raw = f.read(64 << 20)
    except FileNotFoundError:
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    except OSError as err:
        raise OutputError(f"{label}: cannot read {path}: {err.strerror}") from err
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as err:  # nesting bombs too
        raise OutputError(f"{label}: {path}: not valid JSON ({err})") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
        raise OutputError(f"{label}: {path}: not an OCI image index")
    doc.setdefault("manifests", [])
    return doc


def set_tag(index: dict[str, Any], manifest: Descriptor, tag: str | None) -> dict[str, Any]:
    """``index`` with ``manifest`` under ``tag`` (replacing what had that tag, in place).

    Without a tag the manifest is added untagged, once.
    """
    new = manifest.to_json()
    if tag is not None:
        annotations = dict(manifest.annotations)
        annotations[REF_NAME] = tag
        new["annotations"] = annotations
    out: list[Any] = []
    placed = False
    for desc in index["manifests"]:
        ann = desc.get("annotations") if isinstance(desc, dict) else None
        name = ann.get(REF_NAME) if isinstance(ann, dict) else None
        if tag is not None:
            same = name == tag
        else:
            same = name is None and isinstance(desc, dict) and desc.get("digest") == manifest.digest
        if same:
            if not placed:
                out.append(new)
                placed = True
            continue
        out.append(desc)
    if not placed:
        out.append(new)
    return {**index, "manifests": out}


def add_to_index(
    layout: str,
    manifest: Descriptor,
    tag: str | None,
    label: str,
    blobs: Iterable[str] = (),
) -> None:
    """Read-modify-write index.json under the lock; the last step of writing an image.

    ``blobs`` (digests the image needs) are checked to still exist under the lock:
    a failed concurrent writer may have removed one it had added before we saw it.
    """
    with locked_index(layout, label):
        for digest in blobs:
            if not os.path.exists(os.path.join(layout, "blobs", "sha256", digest[7:])):
                raise OutputError(
                    f"{label}: blob {digest} disappeared while writing (a concurrent "
                    "writer failed?); run again"
                )
        index = set_tag(read_index(layout, label), manifest, tag)
        index.setdefault("schemaVersion", 2)
        index.setdefault("mediaType", OCI_INDEX)
        try:
            write_atomic(os.path.join(layout, INDEX_FILE), _pretty_json(index))
        except OSError as err:
            raise os_error(label, err) from err


def _pretty_json(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()


@dataclass(frozen=True, slots=True)
class Garbage:
    """Blobs of a layout that no index entry reaches: removed (or, dry run, to remove)."""

    removed: tuple[str, ...]  # digests
    removed_bytes: int
    kept: int


def collect_garbage(layout: str, label: str, *, dry_run: bool = False) -> Garbage:
    """Remove every blob that index.json does not reach, under the index lock.

    Old blobs pile up in a layout that is rewritten build after build. A writer adds its
    blobs before it takes the lock to add its manifest, and checks under the lock that
    they still exist, so a collection racing a write makes that write fail cleanly ("run
    again"), never leave a manifest without its blobs. Temporary files of writers still
    at work are never touched.
    """
    if not os.path.isfile(os.path.join(layout, LAYOUT_FILE)):
        raise OutputError(f"{label}: {layout} is not an OCI layout (no {LAYOUT_FILE} file)")
    blobs = os.path.join(layout, "blobs", "sha256")
    with locked_index(layout, label):
        refs = referenced(layout)
        if refs is None:
            raise OutputError(
                f"{label}: cannot read every document index.json reaches; nothing removed"
            )
        try:
            names = sorted(os.listdir(blobs))
        except FileNotFoundError:
            names = []
        except OSError as err:
            raise os_error(label, err) from err
        removed: list[str] = []
        size = 0
        kept = 0
        for name in names:
            if name.startswith(TMP_PREFIX) or len(name) != 64:
                continue
            if name in refs:
                kept += 1
                continue
            path = os.path.join(blobs, name)
            try:
                st = os.lstat(path)
                if not dry_run:
                    os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as err:
                raise os_error(label, err) from err
            removed.append("sha256:" + name)
            size += st.st_size
    return Garbage(tuple(removed), size, kept)
