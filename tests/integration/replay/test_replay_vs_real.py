"""The simulator against reality, small: bench/replay_vs_real.py profiles the engine (tiny-random on
this CPU), sends a few seconds of Poisson traffic through `hybridgw serve` (kv_fit: local engine,
spill to the simulated hosted API) and replays the gateway's ledger. How close the prediction comes
depends on this machine's load, so it is a benchmark (docs/benchmarks.md), not an assertion here: the
test checks that the whole loop runs and yields a measured and a predicted value for every figure."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_a_recorded_bench_run_is_replayed_figure_by_figure(tmp_path: Path) -> None:
    out = tmp_path / "comparison.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "replay_vs_real.py"), "--duration", "6", "--schedule", "8:6",
         "--profile-requests", "4", "--profile-batch", "12", "--keep", str(tmp_path / "run"), "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["requests"] >= 10 and result["ok"] == result["requests"]
    figures = {name: (v["measured"], v["predicted"]) for name, v in result["figures"].items()}
    for name in ("TTFT p50 s (bench client)", "TTFT p95 s (bench client)", "local share", "total cost $"):
        measured, predicted = figures[name]
        assert math.isfinite(measured) and math.isfinite(predicted) and predicted >= 0, (name, run.stdout)
    calibrated = {name: v["calibrated"] for name, v in result["figures"].items()}  # `replay --calibrate`
    assert all(v is not None and math.isfinite(v) for v in calibrated.values()), calibrated
    assert 0 <= figures["local share"][1] <= 1 and figures["TTFT p50 s (bench client)"][1] > 0
    assert "| local share |" in run.stdout and "load average at end" in run.stdout
