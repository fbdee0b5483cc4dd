"""The benchmark's quick mode runs end to end and its numbers obey the invariants of the metric."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out)],
        check=True, capture_output=True, timeout=120,
    )
    doc = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().count("| squashed |") == 6  # 2 budgets x 3 modes
    series = doc["series"]
    assert set(series) == {"8", "16"}
    for budget, by in series.items():
        assert {"as-built", "squashed", "apko-origin", "nix-popularity", "ostree-ext",
                "chunkah"} <= set(by)
        for name, modes in by.items():
            for mode, s in modes.items():
                if not name.startswith(("per-source", "as-built")):
                    assert s["layers"] <= int(budget), (name, budget)
                for u in s["updates"]:
                    # every changed file sits in a pulled layer: nothing beats the floor
                    assert u["floor"] <= u["pulled"] <= u["pulled_docker"] <= u["total"], (
                        name, mode,
                    )
                    if name == "squashed":
                        assert u["pulled"] == u["total"]
        clamped = by["per-source (unbounded)"]["clamped"]
        assert clamped["pulled_mean"] < by["squashed"]["clamped"]["pulled_mean"]
