"""End to end: a real dpkg root rebuilt with one source package updated keeps every other
layer byte for byte, `diff` counts exactly the changed layers, `verify` proves no loss."""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.diff import diff
from pkgchunk.rechunk import PlanOptions, RechunkResult, plan_only, rechunk_packages
from pkgchunk.verify import verify
from tests.debbuild import build_deb, install, new_root

#: source -> binary packages, with the payload size of each (incompressible bytes).
PACKAGES = {
    "alpha": {"alpha": 300_000},
    "beta": {"beta": 250_000, "libbeta1": 400_000},
    "gamma": {"gamma": 500_000},
    "delta": {"delta": 200_000},
    "epsilon": {"epsilon-bin": 350_000},
}


def _debs(work: Path, versions: dict[str, str]) -> list[Path]:
    out = []
    for source, binaries in PACKAGES.items():
        version = versions.get(source, "1.0-1")
        for name, size in binaries.items():
            rng = random.Random(f"{name}-{version}")
            deb = work / f"{name}_{version}_all.deb"
            if not deb.exists():
                deb = build_deb(
                    work, name, version,
                    files={
                        f"/usr/lib/{source}/{name}.bin": rng.randbytes(size),
                        f"/usr/share/doc/{name}/README": f"{name} {version}\n".encode(),
                    },
                    fields={"Source": source} if source != name else None,
                )
            out.append(deb)
    return out


def _build_root(root: Path, work: Path, versions: dict[str, str]) -> Path:
    new_root(root)
    install(root, *_debs(work, versions))
    return root


def _layers(result: RechunkResult) -> dict[str, tuple[str, frozenset[str]]]:
    groups = {layer.name: frozenset(layer.groups) for layer in result.planned.outcome.plan.layers}
    return {w.name: (w.digest, groups[w.name]) for w in result.write.layers}


@pytest.mark.slow
def test_update_keeps_unchanged_layers_identical(tmp_path: Path) -> None:
    work = tmp_path / "debs"
    work.mkdir()
    root1 = _build_root(tmp_path / "root1", work, {})
    time.sleep(1.1)  # the rebuild installs at another wall-clock second, like a real CI rebuild
    root2 = _build_root(tmp_path / "root2", work, {"beta": "1.1-1"})
    out = tmp_path / "out"

    v1 = rechunk_packages(f"rootfs:{root1}", f"oci:{out}:v1")
    v2 = rechunk_packages(f"rootfs:{root2}", f"oci:{out}:v2", PlanOptions(prev=f"oci:{out}:v1"))
    assert v2.previous == f"oci:{out}:v1"
    old, new = _layers(v1), _layers(v2)
    assert set(old) == set(new)  # the plan kept its layers
    changed = {name for name in new if new[name][0] != old[name][0]}
    beta_layer = next(n for n, (_, g) in new.items() if any("beta" in k for k in g))
    assert beta_layer in changed
    for name in set(new) - changed:
        assert new[name][1] == old[name][1]
    # Only beta's layer and the package database's layer may change.
    unchanged_sources = {"alpha", "gamma", "delta", "epsilon"}
    for name in changed:
        assert not any(s in key for key in new[name][1] for s in unchanged_sources), name
    assert len(changed) <= 2

    result = diff(f"oci:{out}:v1", f"oci:{out}:v2")
    sizes = {w.name: w.size for w in v2.write.layers}
    assert result.pull_bytes == sum(sizes[n] for n in changed)
    assert result.total_bytes == sum(sizes.values())
    assert any("beta" in g.group and g.old != g.new for g in result.groups)
    assert not any(s in g.group for g in result.groups for s in unchanged_sources)

    # Nothing lost: verify applies the recorded mtime policy to the input and compares exactly.
    assert verify(f"rootfs:{root2}", f"oci:{out}:v2", prev=f"oci:{out}:v1").identical
    # The same rebuild without the clamp changes layers that hold no updated package.
    keep = rechunk_packages(
        f"rootfs:{root2}", f"oci:{out}:keep",
        PlanOptions(prev=f"oci:{out}:v1", mtime_policy="keep"),
    )
    kept = _layers(keep)
    assert len({n for n in kept if kept[n][0] != old[n][0]}) > len(changed)


def test_plan_json_and_diff_cli(tmp_path: Path) -> None:
    work = tmp_path / "debs"
    work.mkdir()
    root = _build_root(tmp_path / "root", work, {})
    runner = CliRunner()
    res = runner.invoke(cli, ["plan", f"rootfs:{root}", "--json", "--max-layers", "3"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["rules"] == "debian"
    assert 1 <= len(doc["layers"]) <= 3
    for layer in doc["layers"]:
        assert {"name", "packages", "files", "bytes", "change_probability"} <= set(layer)
        assert 0.0 <= layer["change_probability"] <= 1.0
    names = {p for layer in doc["layers"] for p in layer["packages"]}
    assert {"alpha", "beta", "libbeta1", "gamma", "delta", "epsilon-bin"} <= names
    planned = plan_only(f"rootfs:{root}", PlanOptions(max_layers=3))
    assert sum(len(layer.paths) for layer in planned.outcome.plan.layers) == sum(
        layer["files"] for layer in doc["layers"]
    )

    out = tmp_path / "out"
    res = runner.invoke(cli, ["rechunk", f"rootfs:{root}", f"oci:{out}:a", "--json"])
    assert res.exit_code == 0, res.output
    written = json.loads(res.output)
    assert written["previous"] is None and all(not la["reused"] for la in written["layers"])
    # Same tag again: the image at DEST is the previous build; every layer is reused.
    shutil.copytree(out, tmp_path / "copy")
    res = runner.invoke(cli, ["rechunk", f"rootfs:{root}", f"oci:{out}:a", "--json"])
    again = json.loads(res.output)
    assert again["previous"] == f"oci:{out}:a"
    assert all(la["reused"] for la in again["layers"])
    assert [la["digest"] for la in again["layers"]] == [la["digest"] for la in written["layers"]]
    res = runner.invoke(cli, ["diff", f"oci:{tmp_path}/copy:a", f"oci:{out}:a", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["pull_bytes"] == 0 and d["total_bytes"] == sum(
        la["compressed_bytes"] for la in written["layers"]
    )
    res = runner.invoke(cli, ["diff", f"oci:{tmp_path}/copy:nope", f"oci:{out}:a"])
    assert res.exit_code == 2 and "nope" in res.output
