"""Directory mtimes stay put across builds: the limit ``T`` is recorded and carried over.

Every layer carries the parent directories of its files, so a directory whose mtime moves
changes every layer below it. ``T`` (start of the oldest payload's year) would move when the
image's oldest package is updated; the label carries it, so it does not.
"""

from __future__ import annotations

import calendar
import random
from pathlib import Path

import pytest

from pkgchunk.io import open_image
from pkgchunk.plan.record import BuildRecord
from pkgchunk.rechunk import PlanOptions, RechunkResult, rechunk_packages
from pkgchunk.verify import verify
from tests.debbuild import build_deb, install, new_root


def _t(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0))


#: source -> (payload time of version 1.0-1); alpha is the oldest package of the image.
BUILT = {"alpha": _t(2019, 6), "beta": _t(2022, 3), "gamma": _t(2022, 5)}


def _deb(work: Path, name: str, version: str, when: int, mp: pytest.MonkeyPatch) -> Path:
    # dpkg-deb clamps payload mtimes to SOURCE_DATE_EPOCH, as Debian's builds do
    mp.setenv("SOURCE_DATE_EPOCH", str(when))
    rng = random.Random(f"{name}-{version}")
    deb = build_deb(work, name, version, files={
        f"/usr/lib/{name}/{name}.bin": rng.randbytes(200_000),
        f"/usr/share/doc/{name}/README": f"{name} {version}\n".encode(),
    })
    mp.delenv("SOURCE_DATE_EPOCH")
    return deb


def _root(tmp: Path, tag: str, debs: list[Path]) -> Path:
    root = new_root(tmp / tag)
    install(root, *debs)
    return root


def _digest_of(result: RechunkResult, source: str) -> str:
    names = {la.name for la in result.planned.outcome.plan.layers
             if f"src/{source}" in la.groups}
    (name,) = names
    return next(w.digest for w in result.write.layers if w.name == name)


@pytest.mark.slow
def test_updating_the_oldest_package_moves_no_other_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "debs"
    work.mkdir()
    v1_debs = [_deb(work, n, "1.0-1", t, monkeypatch) for n, t in BUILT.items()]
    alpha2 = _deb(work, "alpha", "1.1-1", _t(2023, 2), monkeypatch)
    root1 = _root(tmp_path, "root1", v1_debs)
    root2 = _root(tmp_path, "root2", [alpha2, *v1_debs[1:]])
    out = tmp_path / "out"

    v1 = rechunk_packages(f"rootfs:{root1}", f"oci:{out}:v1")
    assert v1.planned.directory_epoch == _t(2019, 1)
    v2 = rechunk_packages(f"rootfs:{root2}", f"oci:{out}:v2", PlanOptions(prev=f"oci:{out}:v1"))
    # alpha 1.0 (2019) is gone, yet the directories keep the limit v1 recorded
    assert v2.planned.directory_epoch == _t(2019, 1)
    with open_image(f"oci:{out}:v2") as image:
        assert BuildRecord.from_labels(image.labels).carried_directory_epoch == _t(2019, 1)
    assert _digest_of(v2, "alpha") != _digest_of(v1, "alpha")
    for source in ("beta", "gamma"):
        assert _digest_of(v2, source) == _digest_of(v1, source), source
    assert verify(f"rootfs:{root2}", f"oci:{out}:v2", prev=f"oci:{out}:v1").identical
    # The carried limit is not what the input gives: without the previous build named it is
    # a claim verify cannot check, so it is reported rather than applied.
    alone_check = verify(f"rootfs:{root2}", f"oci:{out}:v2")
    assert any("dirs=" in d.what and "--prev" in d.what for d in alone_check.differences)

    # Without the previous build the limit comes from this image alone (2022 now): the
    # directory entries of every layer move with it, which is what carrying it prevents.
    alone = rechunk_packages(f"rootfs:{root2}", f"oci:{tmp_path / 'alone'}:v2")
    assert alone.planned.directory_epoch == _t(2022, 1)
    assert _digest_of(alone, "beta") != _digest_of(v1, "beta")
    assert verify(f"rootfs:{root2}", f"oci:{tmp_path / 'alone'}:v2").identical
