"""A pipeline that keeps no previous build: each image rechunked on its own (no ``--prev``, a
new destination) or with ``--fresh``. The next image, after a security update of a few
packages, must land its unchanged packages in byte-identical layers (plan/stable.py), but
for the one shared layer a class change may reshape.

Real .debs with real changelogs (so the change probabilities are the ones a Debian image
gives), installed by the real dpkg, rechunked through the CLI, compared by ``pkgchunk diff``.
"""

from __future__ import annotations

import calendar
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.debbuild import build_deb, install, new_root
from tests.helpers import require_tool

DAY = 86_400
UPGRADED = ("pkg03", "pkg11", "pkg17", "pkg24", "pkg30")


def _changelog(name: str, version: str, times: list[int]) -> str:
    entries = []
    for i, t in enumerate(sorted(times, reverse=True)):
        stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))
        entries.append(
            f"{name} ({version if i == 0 else f'0.{len(times) - i}'}) unstable; urgency=medium\n\n"
            f"  * change {i}\n\n -- Test <test@example.org>  {stamp}\n"
        )
    return "\n".join(entries)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pkgchunk.cli", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    require_tool("dpkg")
    tmp = tmp_path_factory.mktemp("stateless")
    work = tmp / "debs"
    work.mkdir()
    rnd = random.Random(2026)
    now = calendar.timegm((2025, 6, 1, 0, 0, 0))
    v1, v2 = [], []
    for i in range(36):
        name = f"pkg{i:02}"
        size = int(10 ** rnd.uniform(4.3, 6.3))  # 20 kB to 2 MB, like most Debian packages
        # 0 to 12 changelog days in the two years before the image, most packages few
        history = [
            now - rnd.randrange(730) * DAY for _ in range(rnd.choice([0, 0, 1, 1, 2, 4, 12]))
        ]
        body = rnd.randbytes(size)
        files = {
            f"/usr/lib/{name}/{name}.so": body,
            f"/usr/share/{name}/data": rnd.randbytes(size // 3),
        }
        old = build_deb(
            work,
            name,
            "1.0-1",
            files=files,
            changelog=_changelog(name, "1.0-1", history or [now - 900 * DAY]),
        )
        v1.append(old)
        if name in UPGRADED:  # a security update: new binary, a bit bigger, one changelog day
            patched = {**files, f"/usr/lib/{name}/{name}.so": body + rnd.randbytes(size // 50)}
            v2.append(
                build_deb(
                    work,
                    name,
                    "1.0-1+deb1",
                    files=patched,
                    changelog=_changelog(
                        name, "1.0-1+deb1", [now + 20 * DAY, *(history or [now - 900 * DAY])]
                    ),
                )
            )
        else:
            v2.append(old)
    out = []
    for n, debs in ((1, v1), (2, v2)):
        root = new_root(tmp / f"root{n}")
        install(root, *debs)
        out.append(root)
    return out[0], out[1]


@pytest.mark.parametrize("how", ["no previous", "--fresh"])
def test_an_update_rechunked_without_state_reuses_every_unchanged_layer(
    roots: tuple[Path, Path], tmp_path: Path, how: str
) -> None:
    first, second = roots
    epoch = ["--max-layers", "12", "--source-date-epoch", "1700000000", "--json"]
    res = _cli("rechunk", f"rootfs:{first}", f"oci:{tmp_path}/a:v1", *epoch)
    assert res.returncode == 0, res.stderr
    before = {la["digest"] for la in json.loads(res.stdout)["layers"]}
    dest = f"oci:{tmp_path}/b:v2" if how == "no previous" else f"oci:{tmp_path}/a:v2"
    extra = ["--fresh", "--prev", f"oci:{tmp_path}/a:v1"] if how == "--fresh" else []
    res = _cli("rechunk", f"rootfs:{second}", dest, *epoch, *extra)
    assert res.returncode == 0, res.stderr
    layers = json.loads(res.stdout)["layers"]
    assert len(layers) == 12
    assert sum(len(la["groups"]) > 1 for la in layers) >= 4  # packages share layers
    pulled, unchanged_moved = [], []
    for la in layers:
        changed = {g.removeprefix("src/") for g in la["groups"]} & set(UPGRADED) or any(
            not g.startswith("src/") for g in la["groups"]
        )  # buckets and pkgdb change anyway
        if la["digest"] not in before:
            pulled.append(la["groups"])
            if not changed:
                unchanged_moved.append(la["groups"])
    # An upgraded package that crosses a class boundary leaves its cell, which may then hold
    # one layer fewer: one layer of unchanged packages may change with it, never more.
    assert len(unchanged_moved) <= 1, unchanged_moved
    assert len(pulled) <= len(UPGRADED) + 1, pulled
    assert len(layers) - len(pulled) >= 6
    res = _cli("diff", f"oci:{tmp_path}/a:v1", dest, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["pull_bytes"] == sum(
        la["compressed_bytes"] for la in layers if la["digest"] not in before
    )
