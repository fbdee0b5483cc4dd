"""The speed benchmark's quick mode runs end to end and checks what it claims to check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import require_tool

REPO = Path(__file__).resolve().parent.parent


def test_bench_speed_quick(tmp_path: Path) -> None:
    for tool in ("pigz", "zstd"):
        require_tool(tool)
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "speed.py"), "--quick", "--out", str(out)],
        check=True, capture_output=True, timeout=300,
    )
    doc = json.loads((out / "speed.json").read_text())
    assert doc["machine"]["nproc"] >= 1 and doc["machine"]["cpu"]
    real = doc["real"]
    assert len(real["repetitions"]) == 2
    for rep in real["repetitions"]:
        for run in rep.values():
            assert run["wall"] > 0 and run["maxrss_mb"] > 0
    summary = real["summary"]["trees"]["pkgchunk"]
    for comp in ("gzip", "zstd"):
        cold, warm = summary[f"cold_{comp}"], summary[f"warm_{comp}"]
        assert cold["reproducible"], cold["manifests"]  # two cold runs, one digest
        assert cold["layers"] > 1 and cold["x_floor"] > 0
        assert warm["all_reused"] and warm["reused"] == cold["layers"]
        assert summary[f"rootfs_{comp}"]["layers"] > 1
    # gzip and zstd layers differ, so the images do too
    assert summary["cold_gzip"]["manifests"] != summary["cold_zstd"]["manifests"]
    synth = doc["synth"]
    assert [r["files"] for r in synth["rows"]] == [300, 600, 1200, 600]
    assert synth["bytes_per_file"] > 0
    md = (out / "speed.md").read_text()
    assert md.count("| cold, gzip |") == 1 and "bytes per file" in md
    assert not list(out.glob("pkgchunk-speed-*"))  # scratch space removed
