"""Several real pkgchunk processes writing into one ``oci:`` layout at the same moment: each
one's tag resolves afterwards, no tag is lost, and every image verifies against its source.

(test_write_errors.py races threads inside one process; here the index lock is exercised
across processes, which is what ``flock`` is for.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.crafted import busy_source, cli_env, layout_problems, layout_tags, run_cli

CLI = [sys.executable, "-c", "from pkgchunk.cli import main; main()"]


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def verified(src: str, dest: str, env: dict[str, str]) -> None:
    res = run_cli(["verify", src, dest], env)
    assert res.returncode == 0 and res.stdout.startswith("identical: "), res.stdout + res.stderr


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    work = tmp_path_factory.mktemp("src")
    return busy_source(work / "a", seed=1, megabytes=4), busy_source(work / "b", seed=2,
                                                                       megabytes=4)


@pytest.mark.parametrize("fresh", [False, True], ids=["existing-layout", "new-layout"])
def test_two_writers_both_tags_resolve(
    tmp_path: Path, sources: tuple[str, str], fresh: bool
) -> None:
    src_a, src_b = sources
    env = cli_env(tmp_path)
    dest = tmp_path / "out"
    if not fresh:
        assert run_cli(["rechunk", src_a, f"oci:{dest}:v1"], env).returncode == 0
    for round_ in range(2):
        # different sources and compressions: both write new blobs, then race for the index
        procs = [
            start(["rechunk", src_a, f"oci:{dest}:a{round_}"], env),
            start(["rechunk", src_b, f"oci:{dest}:b{round_}", "--compression", "zstd"], env),
        ]
        results = [finish(p) for p in procs]
        assert all(code == 0 for code, _ in results), results
    tags = layout_tags(dest)
    want = {f"{x}{r}" for x in "ab" for r in range(2)} | (set() if fresh else {"v1"})
    assert set(tags) == want
    assert layout_problems(dest) == []
    for tag in sorted(want):
        verified(src_b if tag.startswith("b") else src_a, f"oci:{dest}:{tag}", env)
    assert not [p.name for p in (dest / "blobs" / "sha256").iterdir() if p.name.startswith(".")]


def test_same_source_same_blobs_at_once(tmp_path: Path, sources: tuple[str, str]) -> None:
    """Four writers of the same image (identical blobs, renamed into place by each) under
    four tags, into a layout none of them has seen yet."""
    src, _ = sources
    env = cli_env(tmp_path)
    dest = tmp_path / "out"
    procs = [start(["rechunk", src, f"oci:{dest}:t{i}"], env) for i in range(4)]
    results = [finish(p) for p in procs]
    assert all(code == 0 for code, _ in results), results
    tags = layout_tags(dest)
    assert set(tags) == {"t0", "t1", "t2", "t3"} and len(set(tags.values())) == 1
    assert layout_problems(dest) == []
    verified(src, f"oci:{dest}:t3", env)


def test_failed_writer_keeps_a_new_layout_another_committed_to(tmp_path: Path) -> None:
    """Writer A created the layout and then failed; meanwhile writer B committed its tag
    there: A's cleanup must not take B's image with it. With nothing committed, the
    directories A created go."""
    from pkgchunk.oci.mediatypes import OCI_MANIFEST
    from pkgchunk.oci.store import (
        BlobStore,
        add_to_index,
        init_layout,
        remove_new_layout,
    )

    dest = tmp_path / "new" / "out"
    created = init_layout(str(dest), "A")
    assert created == str(tmp_path / "new")
    b = BlobStore(str(dest), "B")
    desc = b.put_bytes(b'{"schemaVersion":2,"layers":[]}', OCI_MANIFEST)
    add_to_index(str(dest), desc, "b", "B", [desc.digest])
    remove_new_layout(str(dest), created, "A")
    assert layout_tags(dest) == {"b": desc.digest}
    other = tmp_path / "other" / "out"
    created = init_layout(str(other), "A")
    assert created is not None
    remove_new_layout(str(other), created, "A")
    assert not (tmp_path / "other").exists()


def test_leftovers_of_a_killed_writer_do_not_make_a_directory_foreign(tmp_path: Path) -> None:
    """Killed between taking the lock and writing oci-layout, a writer leaves the lock
    file and a temp file: the next writer still takes the directory as a new layout."""
    from pkgchunk.oci.store import init_layout

    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "index.json.lock").touch()
    (dest / ".tmp-abc123").write_text("half a marker")
    assert init_layout(str(dest), "t") is None
    assert (dest / "oci-layout").exists()
