"""verify: every attribute difference is found and named; equal images pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.io import open_image
from pkgchunk.oci.write import WriteOptions, write_image
from pkgchunk.tree import Entry, FileTree
from pkgchunk.verify import Difference, compare, compare_config, verify
from tests.oci.writecases import T, TreeBuilder, make_source, split_specs


def base(root: Path) -> FileTree:
    root.mkdir(parents=True, exist_ok=True)
    b = TreeBuilder(root)
    b.add("etc", "dir", mtime=T)
    b.reg("etc/conf", b"key=1\n", mtime=T + 5, xattrs=(("user.a", b"1"), ("user.b", b"2")))
    b.reg("etc/big", b"x" * 5000, mtime=T)
    b.reg("usr/bin/a", b"same inode", link=7, mode=0o755)
    b.reg("usr/bin/b", b"same inode", link=7, mode=0o755)
    b.add("usr/bin/sh", "sym", target="dash")
    b.add("dev/null", "chr", devmajor=1, devminor=3, mode=0o666)
    b.reg("caf\udce9", b"latin-1")
    return b.tree()


def changed(tree: FileTree, path: str, **kw: object) -> FileTree:
    entries = dict(tree.entries)
    entries[path] = dataclasses.replace(entries[path], **kw)  # type: ignore[arg-type]
    return FileTree(entries, label="b")


def test_equal_trees_from_different_files(tmp_path: Path) -> None:
    a, b = base(tmp_path / "a"), base(tmp_path / "b")
    # group ids are labels only; xattr order is not a difference
    b = changed(b, "usr/bin/a", link=99)
    b = changed(b, "usr/bin/b", link=99)
    b = changed(b, "etc/conf", xattrs=(("user.b", b"2"), ("user.a", b"1")))
    assert compare(a, b) == []


@pytest.mark.parametrize(
    ("path", "change", "message"),
    [
        ("etc/conf", {"mode": 0o600}, "mode 0644 != 0600"),
        ("etc/conf", {"uid": 1000}, "owner 0:0 != 1000:0"),
        ("etc/conf", {"mtime": T + 6}, f"mtime {T + 5} != {T + 6}"),
        ("etc/conf", {"xattrs": (("user.a", b"1"),)}, "xattrs differ (user.b)"),
        ("etc/conf", {"xattrs": (("user.a", b"9"), ("user.b", b"2"))}, "xattrs differ (user.a)"),
        ("usr/bin/sh", {"target": "bash"}, "symlink target 'dash' != 'bash'"),
        ("dev/null", {"devminor": 5}, "device 1,3 != 1,5"),
        ("dev/null", {"kind": "blk"}, "kind chr != blk"),
        ("etc/big", {"size": 4999}, "size 5000 != 4999"),
    ],
)
def test_each_difference_is_named(
    tmp_path: Path, path: str, change: dict[str, object], message: str
) -> None:
    a = base(tmp_path / "a")
    assert compare(a, changed(a, path, **change)) == [Difference(path, message)]


def test_same_size_other_content(tmp_path: Path) -> None:
    a = base(tmp_path / "a")
    (tmp_path / "other").write_bytes(b"key=2\n")
    e = a.entries["etc/conf"]
    b = changed(a, "etc/conf", data=dataclasses.replace(e.data, source=str(tmp_path / "other"),
                                                        offset=0))  # type: ignore[type-var]
    assert compare(a, b) == [Difference("etc/conf", "content differs")]


def test_hardlink_groups_compared_as_path_sets(tmp_path: Path) -> None:
    a = base(tmp_path / "a")
    b = changed(changed(a, "usr/bin/a", link=0), "usr/bin/b", link=0)
    diffs = compare(a, b)
    assert [d.path for d in diffs] == ["usr/bin/a", "usr/bin/b"]
    assert diffs[0].what == "hardlinks {/usr/bin/a, /usr/bin/b} != none"


def test_missing_extra_and_printing(tmp_path: Path) -> None:
    a = base(tmp_path / "a")
    b = FileTree({p: e for p, e in a.entries.items() if p != "caf\udce9"}, label="b")
    b.entries["new"] = Entry(path="new", kind="fifo", mode=0o644)
    diffs = compare(a, b)
    assert diffs == [Difference("caf\udce9", "only in A"), Difference("new", "only in B")]
    assert str(diffs[0]) == "/caf\\xe9: only in A"
    assert compare(a, b, limit=1) == diffs[:1]


def test_mtime_options(tmp_path: Path) -> None:
    a = base(tmp_path / "a")
    clamped = FileTree({p: dataclasses.replace(e, mtime=min(e.mtime, T + 1))
                        for p, e in a.entries.items()})
    assert compare(a, clamped) == [Difference("etc/conf", f"mtime {T + 5} != {T + 1}")]
    assert compare(a, clamped, mtime_clamp=T + 1) == []
    assert compare(a, clamped, ignore_mtime=True) == []
    # The clamp accepts exactly min(mtime, N), nothing else.
    assert compare(a, a, mtime_clamp=T + 1) != []
    assert compare(a, changed(a, "etc/conf", mtime=T), mtime_clamp=T + 1) != []


def test_config_differences() -> None:
    a = {"architecture": "amd64", "os": "linux",
         "config": {"Env": ["A=1"], "Labels": {"x": "1"}, "Volumes": None}}
    b = {"architecture": "amd64", "os": "linux", "created": "2020-01-01T00:00:00Z",
         "config": {"Env": ["A=1"], "Labels": {"x": "1", "org.pkgchunk.plan": "p"}}}
    assert compare_config(a, b) == []
    c = {**b, "architecture": "arm64", "config": {"Env": ["A=2"], "Labels": {"x": "1"}}}
    assert [d.what for d in compare_config(a, c)] == [
        "architecture 'amd64' != 'arm64'", "config.Env ['A=1'] != ['A=2']"
    ]
    assert str(compare_config(a, c)[0]).startswith("<config>: ")


def test_verify_images_and_cli(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    with open_image(src) as image:
        write_image(image.tree, image.config, split_specs(image.tree), f"oci:{tmp_path}/o:t",
                    WriteOptions(source_date_epoch=T + 2))
        # A copy with one file's content changed and everything else equal.
        (tmp_path / "evil").write_bytes(b"root:x:0:0::/root:/bin/dash\n")
        bad = changed(image.tree, "etc/passwd", data=dataclasses.replace(
            image.tree.entries["etc/passwd"].data, source=str(tmp_path / "evil"), offset=0,  # type: ignore[type-var]
        ))
        write_image(bad, image.config, split_specs(bad), f"oci:{tmp_path}/bad:t")
        n = len(image.tree)
    result = verify(src, f"oci:{tmp_path}/o:t", mtime_clamp=T + 2)
    assert result.identical and result.paths == n
    assert not verify(src, f"oci:{tmp_path}/o:t").identical
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", src, f"oci:{tmp_path}/o:t", "--mtime-clamp", str(T + 2)])
    assert (ok.exit_code, ok.output) == (0, f"identical: {n} paths\n")
    ok2 = runner.invoke(cli, ["verify", src, f"oci:{tmp_path}/o:t", "--ignore-mtime"])
    assert ok2.exit_code == 0
    bad_run = runner.invoke(cli, ["verify", src, f"oci:{tmp_path}/bad:t"])
    assert (bad_run.exit_code, bad_run.output) == (1, "/etc/passwd: content differs\n")
    many = runner.invoke(cli, ["verify", src, f"oci:{tmp_path}/o:t"])
    lines = many.output.splitlines()
    assert many.exit_code == 1
    assert len(lines) == 21 and lines[-1].startswith("... and ")
    assert all(": mtime " in line for line in lines[:20])
    missing = runner.invoke(cli, ["verify", src, f"oci:{tmp_path}/nope:t"])
    assert missing.exit_code == 2 and missing.output.startswith("pkgchunk: error: ")
