"""``FileTree.resolve`` against the Linux kernel: generated trees of directories, files and
symlinks (absolute, relative, '..', loops, chains past the 40-link limit) are made for real
on disk; a forked child chroots into them and asks the kernel (``stat``/``lstat``) about
each query path, and resolve must name the same inode or fail where the kernel fails.
This is the merged-/usr resolution ownership relies on.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pkgchunk.tree import Entry, FileTree, ancestors
from tests.hostile.crafted import fuzz_settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")

NAMES = ["a", "b", "usr", "bin", "lib"]
TARGETS = ["a", "b", "usr/bin", "/usr/bin", "/", "..", "../..", ".", "a/..", "/a/../b",
           "b/", "usr//lib/", "/nonexistent", "a/b/c", "../usr", "lib"]

paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
queries = st.builds(
    lambda lead, parts, tail: lead + "/".join(parts) + tail,
    st.sampled_from(["", "/", "./"]),
    st.lists(st.sampled_from([*NAMES, ".", ".."]), min_size=0, max_size=5),
    st.sampled_from(["", "", "/", "/."]),
)


@st.composite
def trees(draw: st.DrawFn) -> dict[str, tuple[str, str]]:
    """path -> (kind, symlink target); parents are directories."""
    out: dict[str, tuple[str, str]] = {}
    for path in draw(st.lists(paths, max_size=10, unique=True)):
        if any(out.get(a, ("dir", ""))[0] != "dir" for a in ancestors(path)):
            continue
        if any(p.startswith(path + "/") for p in out):
            continue
        for a in ancestors(path):
            out.setdefault(a, ("dir", ""))
        kind = draw(st.sampled_from(["dir", "reg", "sym", "sym", "sym"]))
        out[path] = (kind, draw(st.sampled_from(TARGETS)) if kind == "sym" else "")
    return out


def build(root: Path, spec: dict[str, tuple[str, str]]) -> FileTree:
    entries = {}
    for path in sorted(spec, key=lambda p: p.count("/")):
        kind, target = spec[path]
        full = root / path
        if kind == "dir":
            full.mkdir()
        elif kind == "reg":
            full.write_bytes(b"")
        else:
            full.symlink_to(target)
        entries[path] = Entry(path, kind, 0o755, target=target)  # type: ignore[arg-type]
    return FileTree(entries, label="fuzz")


def kernel(root: Path, qs: list[str]) -> list[list[int | None]]:
    """[stat inode, lstat inode] of each query inside a chroot at ``root`` (None: error)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(rfd)
            os.chroot(root)
            os.chdir("/")
            out = []
            for q in qs:
                row: list[int | None] = []
                for fn in (os.stat, os.lstat):
                    try:
                        row.append(fn("/" + q).st_ino)
                    except OSError:
                        row.append(None)
                out.append(row)
            os.write(wfd, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result: list[list[int | None]] = json.loads(data)
    return result


def ours(root: Path, tree: FileTree, q: str, follow: bool) -> int | None:
    got = tree.resolve(q, follow_last=follow)
    return None if got is None else os.lstat(root / got if got else root).st_ino


@fuzz_settings(100)
@given(trees(), st.lists(queries, min_size=1, max_size=8))
def test_resolve_agrees_with_the_kernel(spec: dict[str, tuple[str, str]], qs: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tree = build(root, spec)
        qs = qs + list(spec)
        for q, (stat_ino, lstat_ino) in zip(qs, kernel(root, qs), strict=True):
            assert ours(root, tree, q, True) == stat_ino, (q, "stat")
            assert ours(root, tree, q, False) == lstat_ino, (q, "lstat")


def test_link_limit_is_the_kernels() -> None:
    """40 links in a row resolve, 41 do not, in the kernel and in the tree."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = {f"l{i}": ("sym", f"l{i + 1}") for i in range(41)}
        spec["l41"] = ("reg", "")
        tree = build(root, spec)
        qs = ["l1", "l0"]  # 40 and 41 links to follow
        k = kernel(root, qs)
        assert [row[0] is not None for row in k] == [True, False]
        assert [ours(root, tree, q, True) for q in qs] == [k[0][0], None]
