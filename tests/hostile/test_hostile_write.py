"""A destination the kernel refuses: a really full filesystem (a small tmpfs), a read-only
one, a file-size limit. test_write_errors.py simulates these in-process; here real
pkgchunk processes hit real errno values: exit 2, one line, no temp file left, nothing
that was there before changed (and it still verifies).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.crafted import (
    busy_source,
    cli_env,
    layout_problems,
    layout_tags,
    one_error_line,
    run_cli,
    tree_files,
)
from tests.imagebuild import Layer, Member, build_image, write_layout

MiB = 1 << 20


def snapshot(root: Path) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for p in tree_files(root) if (root / p).is_file()}


class Tmpfs:
    def __init__(self, path: Path) -> None:
        self.path = path

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    """A 7 MiB tmpfs (skipped where mounting is not allowed)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=7m", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield Tmpfs(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> str:
    """~4 MiB of incompressible data: v1 fits the tmpfs, v1 and v2 together do not."""
    return busy_source(tmp_path_factory.mktemp("src") / "src", seed=3, megabytes=4)


def verified(src: str, dest: str, env: dict[str, str]) -> None:
    res = run_cli(["verify", src, dest], env)
    assert res.returncode == 0 and res.stdout.startswith("identical: "), res.stdout + res.stderr


def test_disk_full_while_writing_layers(tmp_path: Path, tmpfs: Tmpfs, src: str) -> None:
    env = cli_env(tmp_path)
    dest = tmpfs.path / "out"
    assert run_cli(["rechunk", src, f"oci:{dest}:v1"], env).returncode == 0
    before = snapshot(tmpfs.path)
    res = run_cli(["rechunk", src, f"oci:{dest}:v2", "--compression", "zstd"], env)
    msg = one_error_line(res.returncode, res.stderr, f"oci:{dest}:v2: cannot write ")
    assert msg.endswith("No space left on device")
    assert snapshot(tmpfs.path) == before  # no temp blob, no half blob, index untouched
    assert layout_problems(dest) == [] and set(layout_tags(dest)) == {"v1"}
    verified(src, f"oci:{dest}:v1", env)
    assert tree_files(tmp_path / "tmpdir") == []


def test_disk_full_for_a_new_layout_and_an_archive(
    tmp_path: Path, tmpfs: Tmpfs, src: str
) -> None:
    env = cli_env(tmp_path)
    (tmpfs.path / "filler").write_bytes(b"\0" * (5 * MiB))
    (tmpfs.path / "old.tar").write_bytes(b"the previous archive")
    before = snapshot(tmpfs.path)
    for dest in (f"oci:{tmpfs.path}/new/deeper/out:v1", f"oci-archive:{tmpfs.path}/old.tar",
                 f"docker-archive:{tmpfs.path}/old.tar"):
        res = run_cli(["rechunk", src, dest], env)
        assert one_error_line(res.returncode, res.stderr).endswith("No space left on device")
        assert snapshot(tmpfs.path) == before, dest  # created dirs and staging removed
    assert tree_files(tmp_path / "tmpdir") == []


def test_read_only_destination(tmp_path: Path, tmpfs: Tmpfs, src: str) -> None:
    env = cli_env(tmp_path)
    dest = tmpfs.path / "out"
    assert run_cli(["rechunk", src, f"oci:{dest}:v1"], env).returncode == 0
    before = snapshot(tmpfs.path)
    tmpfs.remount("ro")
    for target in (f"oci:{dest}:v2", f"oci:{tmpfs.path}/other:v1",
                   f"oci-archive:{tmpfs.path}/a.tar"):
        res = run_cli(["rechunk", src, target], env)
        msg = one_error_line(res.returncode, res.stderr, f"{target}: cannot write ")
        assert msg.endswith("Read-only file system")
    tmpfs.remount("rw")
    assert snapshot(tmpfs.path) == before
    verified(src, f"oci:{dest}:v1", env)


def test_file_size_limit_while_writing(tmp_path: Path) -> None:
    """No mount needed: RLIMIT_FSIZE makes the kernel refuse a blob past 1 MiB (EFBIG).
    Uncompressed source layers are read in place, so only the writer hits the limit."""
    from random import Random

    rnd = Random(5)
    layers = [Layer([Member(f"d{i}/f{j}", data=rnd.randbytes(256 << 10)) for j in range(8)],
                    compression="none") for i in range(2)]
    write_layout(tmp_path / "src", {"t": build_image(layers)})
    src = f"oci:{tmp_path}/src:t"
    env = cli_env(tmp_path)
    dest = tmp_path / "out"
    assert run_cli(["rechunk", src, f"oci:{dest}:v1"], env).returncode == 0
    before = snapshot(dest)
    res = run_cli(["rechunk", src, f"oci:{dest}:v2", "--compression", "none"], env,
                  file_size=MiB)
    msg = one_error_line(res.returncode, res.stderr, f"oci:{dest}:v2: cannot write ")
    assert msg.endswith("File too large")
    assert snapshot(dest) == before
    verified(src, f"oci:{dest}:v1", env)


def test_temp_space_exhausted_while_reading(tmp_path: Path, src: str) -> None:
    """Compressed source layers are spooled to TMPDIR; when that fails the error names the
    layer, and the spool directory goes."""
    env = cli_env(tmp_path)
    res = run_cli(["rechunk", src, f"oci:{tmp_path}/out:v1"], env, file_size=MiB)
    msg = one_error_line(res.returncode, res.stderr, f"{src}: layer 1 (sha256:")
    assert msg.endswith("File too large")
    assert tree_files(tmp_path / "tmpdir") == []
    assert not (tmp_path / "out").exists()


def test_nesting_bomb_index_json(tmp_path: Path, src: str) -> None:
    """index.json nested 100000 deep, as the destination (about to be updated) and as the
    source: json's recursion limit is one line, not a traceback; nothing is changed."""
    env = cli_env(tmp_path)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    bomb = "[" * 100_000 + "]" * 100_000
    (dest / "index.json").write_text(bomb)
    before = snapshot(dest)
    res = run_cli(["rechunk", src, f"oci:{dest}:v1"], env)
    msg = one_error_line(res.returncode, res.stderr, f"oci:{dest}:v1: ")
    assert "index.json: not valid JSON (maximum recursion depth exceeded" in msg
    assert snapshot(dest) == before
    res = run_cli(["rechunk", f"oci:{dest}:v1", f"oci:{tmp_path}/other"], env)
    assert "malformed index.json: maximum recursion depth" in one_error_line(
        res.returncode, res.stderr, f"oci:{dest}:v1: "
    )
