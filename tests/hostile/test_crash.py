"""SIGKILL at any moment of ``pkgchunk rechunk SRC oci:DEST:v2`` into a layout that holds v1:
the layout stays valid (index.json parses, every blob it reaches is there and matches its
digest), v1 still resolves to the same manifest, every tag reads back and holds the source's
files, and a later run (which must not wait for a dead writer's lock) completes v2.

Deterministic kill points come from a driver that patches the writer to kill itself at
that point; the loop kills a plain CLI run after a random delay.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pkgchunk.io import open_image
from pkgchunk.verify import verify
from tests.hostile.crafted import busy_source, cli_env, layout_problems, layout_tags, run_cli

#: Runs the CLI after arranging to SIGKILL itself at POINT (argv[1]).
DRIVER = r"""
import contextlib, os, signal, sys
from pkgchunk.oci import store, write

point = sys.argv.pop(1)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "mid-layer":  # 1 MiB into the layer tars, temp blob files half written
    real_write = write._CancellableSink.write
    seen = [0]
    def write_(self, data):
        seen[0] += len(data)
        if seen[0] > 1 << 20:
            die()
        return real_write(self, data)
    write._CancellableSink.write = write_
elif point == "first-blob-committed":  # one blob renamed into place, referenced by nothing
    real_commit = store.BlobStore.commit
    def commit(self, tmp, digest):
        real_commit(self, tmp, digest)
        die()
    store.BlobStore.commit = commit
elif point == "before-index":  # every blob and the manifest in place, index untouched
    write.add_to_index = lambda *a, **k: die()
elif point == "holding-lock":  # the index lock taken, the index not yet rewritten
    real_locked = store.locked_index
    @contextlib.contextmanager
    def locked(layout, label):
        with real_locked(layout, label):
            die()
            yield
    store.locked_index = locked
elif point in ("index-temp-written", "index-replaced"):
    real_replace = os.replace
    def replace(src, dst, *a, **k):
        if str(dst).endswith("index.json") and point == "index-temp-written":
            die()
        real_replace(src, dst, *a, **k)
        if str(dst).endswith("index.json"):
            die()
    store.os.replace = replace
else:
    raise SystemExit(f"unknown kill point {point}")

from pkgchunk.cli import main
main()
"""
POINTS = ["mid-layer", "first-blob-committed", "before-index", "holding-lock",
          "index-temp-written", "index-replaced"]
CLI = [sys.executable, "-c", "from pkgchunk.cli import main; main()"]


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> str:
    return busy_source(tmp_path_factory.mktemp("src") / "src", seed=7, megabytes=6)


@pytest.fixture(scope="module")
def v1_layout(tmp_path_factory: pytest.TempPathFactory, src: str) -> Path:
    work = tmp_path_factory.mktemp("v1")
    res = run_cli(["rechunk", src, f"oci:{work}/out:v1"], cli_env(work))
    assert res.returncode == 0, res.stderr
    return work / "out"


def layout_with_v1(tmp_path: Path, v1_layout: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """A private copy of the layout holding v1."""
    dest = tmp_path / "out"
    shutil.copytree(v1_layout, dest)
    return dest, cli_env(tmp_path), layout_tags(dest)


def check(dest: Path, src: str, v1: dict[str, str]) -> dict[str, str]:
    """The layout is sound, v1 is what it was, every tag reads back as the source."""
    assert layout_problems(dest) == []
    tags = layout_tags(dest)
    assert tags["v1"] == v1["v1"]
    assert set(tags) <= {"v1", "v2"}
    for tag in tags:
        with open_image(f"oci:{dest}:{tag}") as image:
            assert len(image.tree) > 600
    return tags


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_a_point(tmp_path: Path, src: str, v1_layout: Path, point: str) -> None:
    dest, env, v1 = layout_with_v1(tmp_path, v1_layout)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, point, "rechunk", src, f"oci:{dest}:v2",
         "--compression", "zstd"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    tags = check(dest, src, v1)
    assert ("v2" in tags) == (point == "index-replaced")
    # the dead writer's lock is gone with it: the next writer neither waits nor fails
    res = run_cli(["rechunk", src, f"oci:{dest}:v2", "--compression", "zstd"], env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert set(check(dest, src, v1)) == {"v1", "v2"}
    result = verify(src, f"oci:{dest}:v2")
    assert result.identical, [str(d) for d in result.differences]


def test_kill_at_random_moments(tmp_path: Path, src: str, v1_layout: Path) -> None:
    """A dozen runs, each killed after a random share of a full run's time, each writing
    different blobs (compression and level vary), then one that completes."""
    dest, env, v1 = layout_with_v1(tmp_path, v1_layout)
    start = time.monotonic()
    res = run_cli(["rechunk", src, f"oci:{dest}:probe", "--compression", "gzip", "--level", "1"],
                  env)
    full = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    # forget the probe tag: from here on only v1 and v2 may appear
    doc = json.loads((dest / "index.json").read_bytes())
    doc["manifests"] = [m for m in doc["manifests"]
                        if m["annotations"]["org.opencontainers.image.ref.name"] != "probe"]
    (dest / "index.json").write_text(json.dumps(doc))
    rnd = random.Random(int(os.environ.get("PKGCHUNK_CRASH_SEED", "1")))
    outcomes: list[tuple[int | None, bool]] = []
    for i in range(12):
        args = ["rechunk", src, f"oci:{dest}:v2"]
        args += (["--compression", "zstd", "--level", str(rnd.randint(1, 19))] if i % 2 else
                 ["--compression", "gzip", "--level", str(rnd.randint(1, 9))])
        proc = subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        time.sleep(rnd.uniform(0.05, full * 1.1))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err
        outcomes.append((proc.returncode, "v2" in check(dest, src, v1)))
    print("kill outcomes (exit code, v2 tagged):", outcomes)
    assert (-signal.SIGKILL, False) in outcomes  # some runs really died before committing
    res = run_cli(["rechunk", src, f"oci:{dest}:v2"], env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert set(check(dest, src, v1)) == {"v1", "v2"}
    res = run_cli(["verify", src, f"oci:{dest}:v2"], env)
    assert res.returncode == 0 and res.stdout.startswith("identical: "), res.stdout + res.stderr
