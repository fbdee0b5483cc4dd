"""Prove two images hold the same files: every path, every attribute a layer can carry.

Content is compared by streaming sha256, never by loading files. Hardlinks are
compared as sets of paths (group ids are only labels). With a clamp, mtimes
that rechunk moved back to SOURCE_DATE_EPOCH still count as equal, and nothing
else does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pkgchunk.io import base_tree, open_image
from pkgchunk.pkgdb.ownership import collect
from pkgchunk.plan import mtimes
from pkgchunk.plan.above import as_written
from pkgchunk.plan.record import BuildRecord
from pkgchunk.refs import ImageRef
from pkgchunk.tree import ENC, ERRORS, Entry, FileTree, encode_path

#: Config labels pkgchunk itself adds; they are not a difference.
OWN_LABEL_PREFIX = "org.pkgchunk."
#: Top-level config fields that describe what runs, compared between images.
_CONFIG_FIELDS = ("architecture", "os", "os.version", "os.features", "variant")


@dataclass(frozen=True, slots=True)
class Difference:
    """``path`` is a tree path, or '' for the image config."""

    path: str
    what: str

    def __str__(self) -> str:
        where = "/" + path_text(self.path) if self.path else "<config>"
        return f"{where}: {self.what}"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    paths: int
    differences: tuple[Difference, ...]

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


class _Hasher:
    """sha256 of regular files, once per data location (hardlinks share theirs)."""

    def __init__(self, tree: FileTree) -> None:
        self._tree = tree
        self._cache: dict[tuple[str, int, int], str] = {}

    def digest(self, entry: Entry) -> str:
        assert entry.data is not None
        key = (entry.data.source, entry.data.offset, entry.size)
        got = self._cache.get(key)
        if got is None:
            h = hashlib.sha256()
            with self._tree.open(entry.path) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            got = self._cache[key] = h.hexdigest()
        return got


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
    hash_a, hash_b = _Hasher(tree_a), _Hasher(tree_b)
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
    return diffs


def _entry_diffs(
    a: Entry,
    b: Entry,
    hash_a: _Hasher,
    hash_b: _Hasher,
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
        want = a.mtime if mtime_clamp is None else min(a.mtime, mtime_clamp)
        if want != b.mtime:
            what.append(f"mtime {want} != {b.mtime}")
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


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


def compare_config(config_a: Mapping[str, Any], config_b: Mapping[str, Any]) -> list[Difference]:
    """Differences in what the image runs as (platform, Env, Entrypoint, Labels...).

    Labels pkgchunk adds (``org.pkgchunk.*``) and empty-vs-absent fields are not
    differences; layers, history and timestamps are not compared here.
    """
    diffs: list[Difference] = []
    for key in _CONFIG_FIELDS:
        va, vb = config_a.get(key), config_b.get(key)
        if va != vb and not (_empty(va) and _empty(vb)):
            diffs.append(Difference("", f"{key} {va!r} != {vb!r}"))
    inner_a = dict(config_a.get("config") or {})
    inner_b = dict(config_b.get("config") or {})
    for inner in (inner_a, inner_b):
        labels = {
            k: v
            for k, v in (inner.get("Labels") or {}).items()
            if not k.startswith(OWN_LABEL_PREFIX)
        }
        inner["Labels"] = labels
    for key in sorted(set(inner_a) | set(inner_b)):
        va, vb = inner_a.get(key), inner_b.get(key)
        if va != vb and not (_empty(va) and _empty(vb)):
            diffs.append(Difference("", f"config.{key} {va!r} != {vb!r}"))
    return diffs


def verify(
    ref_a: str | ImageRef,
    ref_b: str | ImageRef,
    *,
    ignore_mtime: bool = False,
    mtime_clamp: int | None = None,
    check_config: bool | None = None,
) -> VerifyResult:
    """Open both images and compare them; the config too unless either is a plain rootfs."""
    with open_image(ref_a) as a, open_image(ref_b) as b:
        diffs: list[Difference] = []
        if check_config is None:
            check_config = not (_is_rootfs(ref_a) or _is_rootfs(ref_b))
        if check_config:
            diffs.extend(compare_config(a.config, b.config))
        tree_a = a.tree
        record = BuildRecord.from_labels(b.labels)
        policy = record.mtime
        kept = record.base_layers
        if 0 < kept <= len(a.layer_tars):
            # B kept A's bottom layers as they are: the policy moved only what is above.
            ownership = collect(tree_a, ignore_errors=True)
            mtime = None if ignore_mtime else policy
            tree_a = as_written(tree_a, base_tree(a, kept), ownership, mtime)
        elif policy is not None and not ignore_mtime:
            # B says how rechunk moved mtimes: apply the same policy to A, compare exactly.
            ownership = collect(tree_a, ignore_errors=True)
            tree_a = mtimes.apply(
                tree_a, ownership, policy=policy.policy,
                source_date_epoch=policy.source_date_epoch,
                directory_epoch=policy.directory_epoch,
            )
        diffs.extend(
            compare(tree_a, b.tree, ignore_mtime=ignore_mtime, mtime_clamp=mtime_clamp)
        )
        return VerifyResult(paths=len(a.tree), differences=tuple(diffs))


def _is_rootfs(ref: str | ImageRef) -> bool:
    if isinstance(ref, ImageRef):
        return ref.transport == "rootfs"
    return ref.startswith("rootfs:")
