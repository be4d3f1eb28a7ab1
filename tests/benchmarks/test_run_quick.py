"""The benchmark suite runs end to end: ``benchmarks/run.py --quick`` prints its table and JSON.

A smoke test only: no timing is asserted (a loaded CI machine must not fail a build); it
checks that every scenario ran, talked to the emulator and exited as expected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_benchmark_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| scenario" in done.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["format"] == "converge.bench/v1"
    assert len(report["calibration_ms"]) == 2 and min(report["calibration_ms"]) > 0
    names = [s["scenario"] for s in report["scenarios"]]
    assert len(names) == 6
    assert any(n.startswith("validate") for n in names)
    for scenario in report["scenarios"]:
        assert scenario["scenario"] in done.stdout
        assert scenario["wall_s"] > 0 and scenario["bound_s"] > 0
        assert scenario["peak_rss_mb"] > 0
        if not scenario["scenario"].startswith("validate"):
            assert scenario["requests"] >= scenario["requests_needed"] > 0
            assert scenario["context_switches"] > 0  # it waited for answers, at least
        # The floor (a minimal client making the same Era calls) is measured for the Era
        # scenarios only, and can never beat start-up.
        if scenario["scenario"].startswith(("plan", "apply")):
            assert scenario["floor_s"] > scenario["startup_s"] > 0  # the row's own start-up
            assert scenario["floor_ratio"] > 0
        else:
            assert scenario["floor_s"] is None
