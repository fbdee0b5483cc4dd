"""The benchmark's quick mode runs end to end and its numbers obey the invariants of the metric."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINES = {"as-built", "squashed", "per-source (unbounded)", "apko-origin", "nix-popularity",
             "ostree-ext", "ostree-ext-fresh", "chunkah"}
MODES = {"as-built", "dirs-clamped", "clamped", "pkgchunk-policy"}


def test_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out)],
        check=True, capture_output=True, timeout=300,
    )
    doc = json.loads((out / "results.json").read_text())
    series = doc["series"]
    assert set(series) == {"8", "16"}
    md = (out / "results.md").read_text()
    for budget, by in series.items():
        # every strategy was planned, checked (check_plan) and scored in every mtime mode
        assert BASELINES | {"pkgchunk", "pkgchunk-fresh"} == set(by)
        for name, modes in by.items():
            assert set(modes) == MODES, name
            assert f"| {budget} | {name} |" in md
            for mode, s in modes.items():
                assert len(s["updates"]) == doc["builds"] - 1
                if name not in ("as-built", "per-source (unbounded)"):
                    assert 1 <= s["layers"] <= int(budget), (name, budget)
                for u in s["updates"]:
                    # every changed file sits in a pulled layer: nothing beats the floor
                    assert u["floor"] <= u["pulled"] <= u["pulled_docker"] <= u["total"], (
                        name, mode,
                    )
                    if name == "squashed":
                        assert u["pulled"] == u["total"]
        policy = {n: m["pkgchunk-policy"] for n, m in by.items()}
        assert policy["per-source (unbounded)"]["pulled_mean"] < policy["squashed"]["pulled_mean"]
        # the previous plan is what keeps layers: without it pkgchunk reshuffles them
        assert policy["pkgchunk"]["pulled_mean"] < policy["pkgchunk-fresh"]["pulled_mean"]
        assert policy["pkgchunk"]["pulled_mean"] < policy["squashed"]["pulled_mean"]
