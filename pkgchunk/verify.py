"""Prove an output holds exactly its input's files: every path, every attribute a layer
can carry.

``verify INPUT OUTPUT`` is asymmetric: OUTPUT's build record (its ``org.pkgchunk.*``
labels) may excuse only what its policy produces from INPUT (``claims.py``); everything
else must be equal, and a label claiming more is itself a difference. ``symmetric=True``
compares two arbitrary images and excuses nothing. Content is compared by streaming
sha256, never by loading files. Hardlinks are compared as sets of paths (group ids are only
labels).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pkgchunk.claims import Stated, expected_output
from pkgchunk.image import Image
from pkgchunk.io import base_tree, open_image, open_manifest
from pkgchunk.oci.mediatypes import OCI_MANIFEST
from pkgchunk.plan import carry
from pkgchunk.plan.record import LABEL, MTIME_LABEL, BuildRecord
from pkgchunk.previous import open_previous
from pkgchunk.refs import ImageRef, parse_ref
from pkgchunk.tree import ENC, ERRORS, ContentHasher, Entry, FileTree, encode_path

#: The index annotation holding a manifest's tag in an OCI layout.
REF_NAME = "org.opencontainers.image.ref.name"
#: Config labels pkgchunk itself adds.
OWN_LABEL_PREFIX = "org.pkgchunk."
#: The path of a Difference about the root directory's own metadata.
ROOT = "."
#: Top-level config fields that describe what runs, compared between images.
_CONFIG_FIELDS = ("architecture", "os", "os.version", "os.features", "variant")


@dataclass(frozen=True, slots=True)
class Difference:
    """``path`` is a tree path, or '' for the image config."""

    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"

    @property
    def where(self) -> str:
        if not self.path:
            return "<config>"
        return "/" if self.path == ROOT else "/" + path_text(self.path)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``notes`` say how to read the result (arguments that look swapped ...)."""

    paths: int
    differences: tuple[Difference, ...]
    notes: tuple[str, ...] = ()
    symmetric: bool = False
    #: Paths of A that B's record (org.pkgchunk.edits) says were left out, per prefix:
    #: not differences.
    pruned: tuple[tuple[str, int], ...] = ()

    @property
    def identical(self) -> bool:
        return not self.differences


def path_text(path: str) -> str:
    """A tree path printable anywhere (undecodable bytes as backslash escapes)."""
    return path.encode(ENC, ERRORS).decode(ENC, "backslashreplace")


def _groups(tree: FileTree) -> dict[str, frozenset[str]]:
    by_link: dict[int, set[str]] = {}
    for path, entry in tree.entries.items():
        if entry.link:
            by_link.setdefault(entry.link, set()).add(path)
    out: dict[str, frozenset[str]] = {}
    for paths in by_link.values():
        group = frozenset(paths)
        for p in paths:
            out[p] = group
    return out


def _fmt_group(group: frozenset[str] | None) -> str:
    if not group:
        return "none"
    return "{" + ", ".join("/" + path_text(p) for p in sorted(group, key=encode_path)) + "}"


def compare(
    tree_a: FileTree,
    tree_b: FileTree,
    *,
    ignore_mtime: bool = False,
    mtime_clamp: int | None = None,
    limit: int | None = None,
) -> list[Difference]:
    """Differences between two trees, in path order; at most ``limit`` when given.

    With ``mtime_clamp`` N, B's mtime must equal ``min(A's mtime, N)``.
    """
    diffs: list[Difference] = []
    groups_a, groups_b = _groups(tree_a), _groups(tree_b)
    hash_a, hash_b = ContentHasher(tree_a), ContentHasher(tree_b)
    paths = sorted(set(tree_a.entries) | set(tree_b.entries), key=encode_path)
    for path in paths:
        if limit is not None and len(diffs) >= limit:
            break
        a = tree_a.entries.get(path)
        b = tree_b.entries.get(path)
        if a is None or b is None:
            diffs.append(Difference(path, "only in B" if a is None else "only in A"))
            continue
        what = _entry_diffs(a, b, hash_a, hash_b, ignore_mtime, mtime_clamp)
        ga, gb = groups_a.get(path), groups_b.get(path)
        if ga != gb:
            what.append(f"hardlinks {_fmt_group(ga)} != {_fmt_group(gb)}")
        if what:
            diffs.append(Difference(path, "; ".join(what)))
    return _root_diffs(tree_a, tree_b, ignore_mtime, mtime_clamp) + diffs + _ambiguous(
        tree_a, tree_b
    )


def _root_diffs(
    tree_a: FileTree, tree_b: FileTree, ignore_mtime: bool, mtime_clamp: int | None
) -> list[Difference]:
    """The root directory's own metadata, where a layer carried it (``./``)."""
    a, b = tree_a.root, tree_b.root
    if a is None and b is None:
        return []
    if a is None or b is None:
        side = "A" if b is None else "B"
        return [Difference(ROOT, f"root directory's metadata (./) only in {side}")]
    unused = ContentHasher(tree_a)
    what = _entry_diffs(a, b, unused, unused, ignore_mtime, mtime_clamp)
    return [Difference(ROOT, "; ".join(what))] if what else []


def _ambiguous(tree_a: FileTree, tree_b: FileTree) -> list[Difference]:
    """Paths runtimes disagree on: what they mean is not proved, whatever the other side."""
    out = []
    for side, tree in (("A", tree_a), ("B", tree_b)):
        for path in tree.ambiguous:
            out.append(Difference(path, (
                f"ambiguous in {side}: added below a lower layer's symlink; compared as "
                "overlay (podman, Docker) applies it, umoci and containerd follow the link"
            )))
    return out


def _entry_diffs(
    a: Entry,
    b: Entry,
    hash_a: ContentHasher,
    hash_b: ContentHasher,
    ignore_mtime: bool,
    mtime_clamp: int | None,
) -> list[str]:
    if a.kind != b.kind:
        return [f"kind {a.kind} != {b.kind}"]
    what: list[str] = []
    if a.mode != b.mode:
        what.append(f"mode {a.mode:04o} != {b.mode:04o}")
    if (a.uid, a.gid) != (b.uid, b.gid):
        what.append(f"owner {a.uid}:{a.gid} != {b.uid}:{b.gid}")
    if not ignore_mtime:
        want = a.mtime_exact
        if mtime_clamp is not None:
            want = min(want, (mtime_clamp, 0))
        if want != b.mtime_exact:
            what.append(f"mtime {_time(want)} != {_time(b.mtime_exact)}")
    if (a.uname, a.gname) != (b.uname, b.gname):
        what.append(f"owner names {a.uname!r}:{a.gname!r} != {b.uname!r}:{b.gname!r}")
    if a.pax != b.pax:
        pa, pb = dict(a.pax), dict(b.pax)
        names = sorted(n for n in set(pa) | set(pb) if pa.get(n) != pb.get(n))
        what.append("pax records differ (" + ", ".join(names) + ")")
    if a.kind == "reg":
        if a.size != b.size:
            what.append(f"size {a.size} != {b.size}")
        elif hash_a.digest(a) != hash_b.digest(b):
            what.append("content differs")
    elif a.kind == "sym" and a.target != b.target:
        what.append(f"symlink target {path_text(a.target)!r} != {path_text(b.target)!r}")
    elif a.kind in ("chr", "blk") and (a.devmajor, a.devminor) != (b.devmajor, b.devminor):
        what.append(f"device {a.devmajor},{a.devminor} != {b.devmajor},{b.devminor}")
    xa, xb = dict(a.xattrs), dict(b.xattrs)
    if xa != xb:
        names = sorted(n for n in set(xa) | set(xb) if xa.get(n) != xb.get(n))
        what.append("xattrs differ (" + ", ".join(names) + ")")
    return what


def _time(exact: tuple[int, int]) -> str:
    seconds, nanos = exact
    return str(seconds) if not nanos else f"{seconds}.{nanos:09d}".rstrip("0")


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


def compare_config(
    config_a: Mapping[str, Any],
    config_b: Mapping[str, Any],
    *,
    skip_labels: frozenset[str] | set[str] | None = None,
) -> list[Difference]:
    """Differences in what the image runs as (platform, Env, Entrypoint, Labels...).

    Labels are compared one by one, except ``skip_labels`` (the ones a claims step checked
    instead: None skips every ``org.pkgchunk.*`` label, as the old verify did).
    Empty-vs-absent fields are not differences; layers, history and timestamps are not
    compared here.
    """
    diffs: list[Difference] = []
    for key in _CONFIG_FIELDS:
        va, vb = config_a.get(key), config_b.get(key)
        if va != vb and not (_empty(va) and _empty(vb)):
            diffs.append(Difference("", f"{key} {va!r} != {vb!r}"))
    inner_a = dict(config_a.get("config") or {})
    inner_b = dict(config_b.get("config") or {})
    labels_a = dict(inner_a.pop("Labels", None) or {})
    labels_b = dict(inner_b.pop("Labels", None) or {})
    for key in sorted(set(inner_a) | set(inner_b)):
        va, vb = inner_a.get(key), inner_b.get(key)
        if va != vb and not (_empty(va) and _empty(vb)):
            diffs.append(Difference("", f"config.{key} {va!r} != {vb!r}"))
    for key in sorted(set(labels_a) | set(labels_b)):
        if skip_labels is None and key.startswith(OWN_LABEL_PREFIX):
            continue
        if skip_labels is not None and key in skip_labels:
            continue
        va, vb = labels_a.get(key), labels_b.get(key)
        if va != vb:
            diffs.append(Difference("", f"label {key} {_label(va)} != {_label(vb)}"))
    return diffs


def _label(value: object) -> str:
    return "(absent)" if value is None else repr(value)


_RECORD_LABELS = (LABEL, MTIME_LABEL)


def _in_layout(ref: str | ImageRef, digest: str, tmp: str) -> ImageRef | None:
    """Manifest ``digest`` in B's own ``oci:`` layout: under a tag, or (the tag since moved
    to B, as when DEST's tag was the previous build) still among its blobs, reached through
    a one-image layout under ``tmp`` that shares B's blobs."""
    image_ref = parse_ref(ref) if isinstance(ref, str) else ref
    if image_ref.transport != "oci" or not digest.startswith("sha256:"):
        return None
    try:
        with open(os.path.join(image_ref.path, "index.json"), "rb") as f:
            index = json.loads(f.read(16 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    for m in index.get("manifests") or [] if isinstance(index, dict) else []:
        name = (m.get("annotations") or {}).get(REF_NAME) if isinstance(m, dict) else None
        if isinstance(m, dict) and m.get("digest") == digest and isinstance(name, str):
            return ImageRef("oci", image_ref.path, name)
    blobs = os.path.join(os.path.abspath(image_ref.path), "blobs")
    try:
        size = os.path.getsize(os.path.join(blobs, "sha256", digest[7:]))
    except OSError:
        return None
    root = os.path.join(tmp, "layout")
    os.makedirs(root)
    os.symlink(blobs, os.path.join(root, "blobs"))
    with open(os.path.join(root, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": digest, "size": size,
            "annotations": {REF_NAME: "previous"}}]}, f)
    return ImageRef("oci", root, "previous")


def excuse_carried(
    tree_a: FileTree,
    tree_b: FileTree,
    digest: str,
    ref_b: str | ImageRef,
    prev: str | ImageRef | None,
) -> tuple[FileTree, list[Difference]]:
    """A (the policy applied) with B's mtime wherever B carried it from the previous build
    ``digest`` names: older than the policy's, and exactly what that build holds for an
    identical entry (``plan.carry.allowed``). Every other mtime is left for ``compare``.

    The previous build is ``prev``, else found under its digest in B's own layout; it is
    read only when B has an mtime older than the policy's."""
    older = [p for p, b in tree_b.entries.items()
             if (a := tree_a.entries.get(p)) is not None and b.mtime < a.mtime]
    if not older:
        return tree_a, []
    with tempfile.TemporaryDirectory(prefix="pkgchunk-verify-") as tmp:
        ref = prev if prev is not None else _in_layout(ref_b, digest, tmp)
        if ref is None:
            return tree_a, [Difference("", f"mtimes carried from previous build {digest}:"
                                           " name it with --prev to check them")]
        image_ref = parse_ref(ref) if isinstance(ref, str) else ref
        found = open_manifest(image_ref, os.path.join(tmp, "manifest")).digest
        if found != digest:
            return tree_a, [Difference("", f"mtimes carried from previous build {digest},"
                                           f" but {ref} is {found}")]
        entries = dict(tree_a.entries)
        with open_image(image_ref) as previous:
            hash_a, hash_p = ContentHasher(tree_a), ContentHasher(previous.tree)
            for path in older:
                a, b = tree_a.entries[path], tree_b.entries[path]
                old = previous.tree.entries.get(path)
                if old is None or old.kind != a.kind:
                    continue
                reg = a.kind == "reg" and a.size == old.size
                mine = carry.identity(a, hash_a.digest(a) if reg else "")
                theirs = carry.PrevEntry(
                    carry.identity(old, hash_p.digest(old) if reg else ""), old.mtime)
                if carry.allowed(b.mtime, a.mtime, mine, theirs):
                    entries[path] = dataclasses.replace(a, mtime=b.mtime)
    return FileTree(entries=entries, label=tree_a.label), []


def verify(
    ref_a: str | ImageRef,
    ref_b: str | ImageRef,
    *,
    ignore_mtime: bool = False,
    mtime_clamp: int | None = None,
    check_config: bool | None = None,
    symmetric: bool = False,
    source_date_epoch: int | None = None,
    prev: str | ImageRef | None = None,
) -> VerifyResult:
    """Compare INPUT ``ref_a`` and OUTPUT ``ref_b`` (the config too unless either is a plain
    rootfs).

    Asymmetric unless ``symmetric``: B's build record may excuse only what its policy
    produces from A, given the ``source_date_epoch`` and previous build ``prev`` the caller
    states (claims.py). ``ignore_mtime`` and ``mtime_clamp`` are the caller's own excuses.
    """
    previous = open_previous(prev) if prev is not None and not symmetric else None
    try:
        with open_image(ref_a) as a, open_image(ref_b) as b:
            diffs: list[Difference] = []
            notes: list[str] = []
            if check_config is None:
                check_config = not (_is_rootfs(ref_a) or _is_rootfs(ref_b))
            expected = a.tree
            skip: set[str] = set()
            pruned: tuple[tuple[str, int], ...] = ()
            if not symmetric:
                stated = Stated(
                    source_date_epoch=source_date_epoch,
                    previous=previous.record if previous is not None else None,
                    previous_ref=str(prev) if prev is not None else None,
                )
                kept = BuildRecord.from_labels(b.labels).base_layers
                base = base_tree(a, kept) if 0 < kept <= len(a.layer_tars) else None
                claims = expected_output(a.tree, b.labels, _layer_count(b), stated, base)
                diffs.extend(Difference("", p) for p in claims.problems)
                expected, skip = claims.expected, claims.vouched
                pruned = tuple(claims.pruned)
                carried = BuildRecord.from_labels(b.labels).mtime
                if carried is not None and carried.carry is not None and not ignore_mtime:
                    expected, missing = excuse_carried(
                        expected, b.tree, carried.carry, ref_b, prev)
                    diffs.extend(missing)
                notes.extend(_swapped(a.labels, b.labels))
            if check_config:
                diffs.extend(compare_config(a.config, b.config, skip_labels=skip))
            diffs.extend(
                compare(expected, b.tree, ignore_mtime=ignore_mtime, mtime_clamp=mtime_clamp)
            )
            return VerifyResult(
                paths=len(a.tree), differences=tuple(diffs), notes=tuple(notes),
                symmetric=symmetric, pruned=pruned,
            )
    finally:
        if previous is not None:
            previous.close()


def _layer_count(image: Image) -> int | None:
    """Layers of the image as read; None when it was read without its manifest (a
    containers-storage image mounted in place)."""
    layers = (image.manifest or {}).get("layers")
    if isinstance(layers, list):
        return len(layers)
    return len(image.layers) or None


def _swapped(labels_a: Mapping[str, str], labels_b: Mapping[str, str]) -> list[str]:
    """A hint when INPUT looks like pkgchunk's output and OUTPUT like its input."""
    if any(k in labels_a for k in _RECORD_LABELS) and not any(
        k in labels_b for k in _RECORD_LABELS
    ):
        return [
            "A (the INPUT) carries pkgchunk's build record and B (the OUTPUT) does not: "
            "were the arguments swapped? verify INPUT OUTPUT excuses only what B's record "
            "produces from A; --symmetric compares two images excusing nothing"
        ]
    return []


def _is_rootfs(ref: str | ImageRef) -> bool:
    if isinstance(ref, ImageRef):
        return ref.transport == "rootfs"
    return ref.startswith("rootfs:")
