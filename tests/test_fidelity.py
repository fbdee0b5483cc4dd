"""What the writer keeps, to the last bit: each case goes through the CLI (rechunk, verify)
and the output is read back by the independent reference reader (tests/reference_flatten.py),
not by the reader under test. Real archives come from GNU tar and a real podman overlay pull.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pkgchunk.cli import cli
from pkgchunk.demo import build_demo_image
from pkgchunk.io import open_image
from tests.helpers import require_tool
from tests.hostile.crafted import ext_header, layout_of_tars, member, pax_record, tar_of
from tests.imagebuild import (
    Layer,
    build_image,
    directory,
    file,
    symlink,
    tar_bytes,
    whiteout,
    write_layout,
)
from tests.oci.writecases import decompress
from tests.reference_flatten import RefEntry, RefTree, reference_flatten

T = 1_700_000_000


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def index_digest(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [m for m in index["manifests"]
               if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    digest: str = desc["digest"]
    return digest


def layer_tars(layout: Path, tag: str, tmp: Path) -> list[str]:
    """The image's layers, uncompressed, as files (for the reference reader)."""
    digest = index_digest(layout, tag)
    manifest = json.loads((layout / "blobs" / "sha256" / digest[7:]).read_text())
    out = []
    tmp.mkdir(parents=True, exist_ok=True)
    for n, desc in enumerate(manifest["layers"]):
        dest = tmp / f"{n}.tar"
        blob = layout / "blobs" / "sha256" / desc["digest"][7:]
        dest.write_bytes(decompress(blob.read_bytes()))
        out.append(str(dest))
    return out


def reference_of(layout: Path, tag: str, tmp: Path) -> RefTree:
    return reference_flatten(layer_tars(layout, tag, tmp))


def rechunk_ok(src: str, out: Path, *extra: str) -> Result:
    res = run("rechunk", src, f"oci:{out}:t", *extra)
    assert res.exit_code == 0, res.output
    return res


# --- a file added through a symlinked parent --------------------------------------------

LOWER = [directory("usr", mtime=T), directory("usr/bin", mtime=T),
         file("usr/bin/gone", b"g", mtime=T), file("usr/bin/sh", b"sh", mtime=T),
         symlink("bin", "usr/bin", mtime=T)]
UPPER = [file("bin/newfile", b"n", mtime=T), whiteout("bin/gone")]


def merged_usr_image(dest: Path) -> str:
    write_layout(dest, {"t": build_image([Layer(LOWER), Layer(UPPER)])})
    return f"oci:{dest}:t"


def test_file_added_through_a_symlinked_parent_is_applied_as_overlay_does(
    tmp_path: Path,
) -> None:
    src = merged_usr_image(tmp_path / "src")
    res = rechunk_ok(src, tmp_path / "out")
    warned = [ln for ln in res.stderr.splitlines() if "a symlink to 'usr/bin'" in ln]
    assert len(warned) == 2, res.stderr
    assert "/bin/newfile is below /bin" in warned[0]
    assert "/bin/.wh.gone is below /bin" in warned[1]
    # overlay's answer: /bin is a directory holding newfile; /usr/bin/gone survives
    ref = reference_of(tmp_path / "out", "t", tmp_path / "ref")
    assert ref.entries["bin"].kind == "dir"
    assert ref.entries["bin/newfile"].kind == "reg"
    assert "usr/bin/gone" in ref.entries and "usr/bin/newfile" not in ref.entries
    # verify proves the files equal, and says the input's meaning is runtime-dependent
    check = run("verify", src, f"oci:{tmp_path / 'out'}:t")
    assert check.exit_code == 1
    assert "/bin/newfile: ambiguous in A" in check.output
    assert check.output.count("ambiguous") == 2


def _podman_overlay(tmp: Path) -> list[str]:
    podman = require_tool("podman")
    if os.geteuid() != 0:
        pytest.skip("the overlay check mounts an overlay store: needs root")
    probe = tmp / "probe"
    for d in ("l", "u", "w", "m"):
        (probe / d).mkdir(parents=True)
    mount = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={probe}/l,upperdir={probe}/u,workdir={probe}/w", str(probe / "m")],
        capture_output=True, text=True, check=False,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount overlay here: {mount.stderr.strip()}")
    subprocess.run(["umount", str(probe / "m")], check=True)
    runroot = tempfile.mkdtemp(prefix="pkgchunk-run-")  # podman wants a short run root
    return [podman, f"--root={tmp / 'storage'}", f"--runroot={runroot}",
            "--storage-driver=overlay"]


def test_symlinked_parent_matches_a_real_podman_overlay_pull(tmp_path: Path) -> None:
    base = _podman_overlay(tmp_path)
    src = merged_usr_image(tmp_path / "src")

    def podman(*args: str) -> str:
        proc = subprocess.run([*base, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
        return proc.stdout.strip()

    image_id = podman("pull", "-q", src)
    merged = Path(podman("image", "mount", image_id))
    try:
        seen: dict[str, str] = {}
        for top, dirs, names in os.walk(merged):
            for name in dirs + names:
                full = Path(top) / name
                try:
                    st = full.lstat()
                except FileNotFoundError:
                    continue  # a whiteout overlay lists but does not show
                kind = ("dir" if full.is_dir() and not full.is_symlink() else
                        "sym" if full.is_symlink() else "reg")
                seen[str(full.relative_to(merged))] = kind
                assert st is not None
    finally:
        podman("image", "unmount", "--all")
        podman("rmi", "-a", "-f")
    with open_image(src) as image:
        ours = {p: e.kind for p, e in image.tree.entries.items()}
    assert seen == ours
    assert seen["bin"] == "dir" and "usr/bin/gone" in seen and "bin/sh" not in seen


# --- the root entry ------------------------------------------------------------------

def test_root_entry_metadata_survives(tmp_path: Path) -> None:
    root = directory("./", mode=0o750, uid=5, gid=6, mtime=T, xattrs={"user.root": b"1"})
    write_layout(tmp_path / "src", {"t": build_image([[root, *LOWER[:4]]])})
    src = f"oci:{tmp_path / 'src'}:t"
    rechunk_ok(src, tmp_path / "out", "--max-layers", "3")
    tars = layer_tars(tmp_path / "out", "t", tmp_path / "ref")
    ref = reference_flatten(tars)
    assert ref.root is not None
    assert (ref.root.mode, ref.root.uid, ref.root.gid) == (0o750, 5, 6)
    assert ref.root.xattrs == (("user.root", b"1"),)
    for tar in tars:  # every layer carries it, whichever an extractor takes it from
        with tarfile.open(tar) as tf:
            assert tf.next().name == "."  # type: ignore[union-attr]
    assert run("verify", src, f"oci:{tmp_path / 'out'}:t").exit_code == 0


# --- sub-second mtimes, ACLs, owner names ----------------------------------------------

def test_sub_second_mtimes_are_kept_with_mtime_keep(tmp_path: Path) -> None:
    members = [directory("d", pax={"mtime": f"{T}.5"}),
               file("d/f", b"x", pax={"mtime": f"{T + 1}.123456789"}),
               file("d/old", b"y", pax={"mtime": "-1.25"})]
    write_layout(tmp_path / "src", {"t": build_image([members])})
    src = f"oci:{tmp_path / 'src'}:t"
    rechunk_ok(src, tmp_path / "out", "--mtime", "keep")
    ref = reference_of(tmp_path / "out", "t", tmp_path / "ref")
    assert ref.entries["d"].mtime_ns == T * 10**9 + 500_000_000
    assert ref.entries["d/f"].mtime_ns == (T + 1) * 10**9 + 123_456_789
    assert ref.entries["d/old"].mtime_ns == -1_250_000_000
    assert run("verify", src, f"oci:{tmp_path / 'out'}:t").exit_code == 0


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_gnu_tar_acls_and_owner_names_are_kept(tmp_path: Path) -> None:
    tar = require_tool("tar")
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_text("hi\n")
    undefined = 0xFFFFFFFF
    try:
        os.setxattr(tree / "d" / "f", "system.posix_acl_access", _acl(
            [(1, 6, undefined), (2, 4, 0), (4, 4, undefined), (0x10, 4, undefined),
             (0x20, 4, undefined)]))
        os.setxattr(tree / "d", "system.posix_acl_default", _acl(
            [(1, 7, undefined), (4, 5, undefined), (0x20, 5, undefined)]))
    except OSError as err:
        pytest.skip(f"this filesystem takes no POSIX ACLs: {err}")
    archive = tmp_path / "acl.tar"
    subprocess.run([tar, "--acls", "--format=pax", "-C", str(tree), "-cf", str(archive), "d"],
                   check=True)
    with tarfile.open(archive) as tf:
        want = {m.name: m for m in tf}
    assert "SCHILY.acl.access" in want["d/f"].pax_headers  # GNU tar wrote them
    src = layout_of_tars(tmp_path / "src", archive.read_bytes())
    rechunk_ok(src, tmp_path / "out", "--mtime", "keep")
    ref = reference_of(tmp_path / "out", "t", tmp_path / "ref")
    for name in ("d", "d/f"):
        acls = {k: v for k, v in want[name].pax_headers.items() if "acl" in k}
        assert acls and set(acls.items()) <= set(ref.entries[name].pax), name
        assert (ref.entries[name].uname, ref.entries[name].gname) == (
            want[name].uname, want[name].gname)
        assert ref.entries[name].uname  # GNU tar names the owner
    assert run("verify", src, f"oci:{tmp_path / 'out'}:t").exit_code == 0


# --- sparse members --------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["gnu", "pax-0.0", "pax-0.1", "pax-1.0"])
def test_gnu_tar_sparse_members_are_read(tmp_path: Path, fmt: str) -> None:
    tar = require_tool("tar")
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    sparse = tree / "d" / "sparse.bin"
    with open(sparse, "wb") as f:
        f.seek(300_000)
        f.write(b"hello")
        f.seek(1 << 20)
        f.write(b"world" * 1000)
        f.truncate(2 << 20)
    args = ["--sparse", "--format=gnu"] if fmt == "gnu" else [
        "--sparse", "--format=pax", f"--sparse-version={fmt[4:]}"]
    archive = tmp_path / "s.tar"
    subprocess.run([tar, *args, "-C", str(tree), "-cf", str(archive), "d"], check=True)
    assert archive.stat().st_size < 1 << 20  # really sparse
    src = layout_of_tars(tmp_path / "src", archive.read_bytes())
    rechunk_ok(src, tmp_path / "out")
    ref = reference_of(tmp_path / "out", "t", tmp_path / "ref")
    entry = ref.entries["d/sparse.bin"]
    assert entry.size == 2 << 20
    assert entry.sha256 == hashlib.sha256(sparse.read_bytes()).hexdigest()
    assert run("verify", src, f"oci:{tmp_path / 'out'}:t").exit_code == 0


def test_pax_sparse_error_names_the_path_not_the_raw_header(tmp_path: Path) -> None:
    records = (pax_record(b"GNU.sparse.major", b"1") + pax_record(b"GNU.sparse.minor", b"0")
               + pax_record(b"GNU.sparse.name", b"d/real.bin")
               + pax_record(b"GNU.sparse.realsize", b"10"))
    data = tar_of(ext_header(records) + member("d/GNUSparseFile.4242/real.bin", b"x\n"))
    src = layout_of_tars(tmp_path / "src", data)
    res = run("rechunk", src, f"oci:{tmp_path / 'out'}:t")
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert "'d/real.bin'" in line and "GNUSparseFile" not in line


# --- a no-op rebuild -----------------------------------------------------------------

def test_no_op_rebuild_gives_the_same_manifest(tmp_path: Path) -> None:
    src = build_demo_image(str(tmp_path / "src"))
    digests = []
    for _ in range(3):
        res = rechunk_ok(src, tmp_path / "out", "--max-layers", "4", "--json")
        doc = json.loads(res.stdout)
        digests.append(index_digest(tmp_path / "out", "t"))
    # the first build has no previous one; from then on nothing changes, not even a counter
    assert digests[1] == digests[2]
    assert all(layer["reused"] for layer in doc["layers"])


def test_reference_reader_reads_what_tarfile_writes(tmp_path: Path) -> None:
    """The reference itself: whiteouts hide lower layers only, opaque dirs empty them."""
    lower = tmp_path / "l.tar"
    upper = tmp_path / "u.tar"
    lower.write_bytes(tar_bytes([directory("a"), file("a/x", b"1"), file("a/y", b"2"),
                                 directory("b"), file("b/z", b"3")]))
    upper.write_bytes(tar_bytes([file("a/.wh..wh..opq"), file("a/new", b"4"),
                                 whiteout("b"), file("b2", b"5")]))
    ref = reference_flatten([str(lower), str(upper)])
    assert sorted(ref.entries) == ["a", "a/new", "b2"]
    assert ref.entries["a/new"] == RefEntry(
        kind="reg", mode=0o644, uid=0, gid=0, mtime_ns=T * 10**9, size=1,
        sha256=hashlib.sha256(b"4").hexdigest())
    assert shutil.which("tar")  # (the GNU tar cases above rely on it)
