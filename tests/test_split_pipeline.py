"""End to end with real .debs and the real dpkg: a big package is upgraded with a new binary,
changelog and md5sums but the same data (upstream files keep their mtimes in a real .deb).
Split by file behaviour, the data part's layer is written byte for byte again (same digest);
`plan` and `diff` say which package was split and which parts changed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.rechunk import PlanOptions, RechunkResult, rechunk_packages
from pkgchunk.verify import verify
from tests.debbuild import build_deb, install, new_root

UPSTREAM_TIME = 1_600_000_000
RULES = "version: 1\nsplit_threshold: 1M\n"


def _debs(work: Path, version: str) -> list[Path]:
    rng = random.Random(f"bin-{version}")
    data = random.Random("data")  # the same bytes in every version
    files = {
        "/usr/bin/bigtool": rng.randbytes(400_000),
        **{f"/usr/share/bigtool/table{i}.dat": data.randbytes(400_000) for i in range(4)},
    }
    pinned = {p: UPSTREAM_TIME for p in files if p.startswith("/usr/share/bigtool/")}
    big = build_deb(work, "bigtool", version, files=files, mtimes=pinned,
                    changelog=f"bigtool ({version}) unstable; urgency=medium\n")
    other = work / "other_1_all.deb"
    if not other.exists():
        other = build_deb(work, "other", "1", files={"/usr/bin/other": b"x" * 5000})
    return [big, other]


def _root(root: Path, work: Path, version: str) -> Path:
    new_root(root)
    install(root, *_debs(work, version))
    return root


def _digests(result: RechunkResult) -> dict[str, str]:
    return {w.name: w.digest for w in result.write.layers}


@pytest.mark.slow
def test_upgrade_with_unchanged_data_reuses_the_data_layer(tmp_path: Path) -> None:
    work = tmp_path / "debs"
    work.mkdir()
    rules = tmp_path / "split.yaml"
    rules.write_text(RULES)
    root1 = _root(tmp_path / "r1", work, "1.0-1")
    root2 = _root(tmp_path / "r2", work, "1.0-2")
    out = tmp_path / "out"

    v1 = rechunk_packages(f"rootfs:{root1}", f"oci:{out}:v1", PlanOptions(rules=str(rules)))
    v2 = rechunk_packages(f"rootfs:{root2}", f"oci:{out}:v2",
                          PlanOptions(rules=str(rules), prev=f"oci:{out}:v1"))
    [split] = v2.planned.outcome.splits
    assert split.group == "src/bigtool"
    assert {p.part for p in split.parts} == {"bin", "data"}
    where = v2.planned.outcome.plan.layer_of()
    data_layer, bin_layer = where["src/bigtool#data"], where["src/bigtool#bin"]
    assert data_layer != bin_layer
    d1, d2 = _digests(v1), _digests(v2)
    assert d2[data_layer] == d1[data_layer]  # the stable part's layer: same blob
    assert d2[bin_layer] != d1[bin_layer]
    assert next(w for w in v2.write.layers if w.name == data_layer).reused
    assert verify(f"rootfs:{root2}", f"oci:{out}:v2").identical

    # Without splitting, the same upgrade changes the whole package's layer.
    whole = tmp_path / "whole.yaml"
    whole.write_text("version: 1\nsplit_threshold: 0\n")
    w1 = rechunk_packages(f"rootfs:{root1}", f"oci:{out}:w1", PlanOptions(rules=str(whole)))
    w2 = rechunk_packages(f"rootfs:{root2}", f"oci:{out}:w2",
                          PlanOptions(rules=str(whole), prev=f"oci:{out}:w1"))
    assert not w2.planned.outcome.splits
    name = w2.planned.outcome.plan.layer_of()["src/bigtool"]
    assert _digests(w2)[name] != _digests(w1)[name]

    runner = CliRunner()
    shown = runner.invoke(cli, ["plan", f"rootfs:{root2}", "--rules", str(rules)])
    assert shown.exit_code == 0, shown.output
    assert "split src/bigtool: " in shown.output and "binary" in shown.output
    doc = json.loads(runner.invoke(
        cli, ["plan", f"rootfs:{root2}", "--rules", str(rules), "--json"]).output)
    [entry] = doc["splits"]
    assert entry["group"] == "src/bigtool" and entry["threshold"] == 1 << 20
    assert {p["group"] for p in entry["parts"]} == {"src/bigtool#bin", "src/bigtool#data"}
    diffed = json.loads(runner.invoke(cli, ["diff", f"oci:{out}:v1", f"oci:{out}:v2",
                                            "--json"]).output)
    [sg] = diffed["split_groups"]
    assert {p["part"]: p["changed"] for p in sg["parts"]} == {"bin": True, "data": False}
    text = runner.invoke(cli, ["diff", f"oci:{out}:v1", f"oci:{out}:v2"]).output
    assert "split src/bigtool by file behaviour: bin changed, data kept" in text
