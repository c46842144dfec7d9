"""The simulator against reality, small: bench/replay_vs_real.py profiles the engine (tiny-random on
this CPU), sends a few seconds of Poisson traffic through `hybridgw serve` (kv_fit: local engine,
spill to the simulated hosted API) and replays the gateway's ledger. Loose tolerances here (a few
dozen requests on a shared 2-core machine); the real figures are in docs/benchmarks.md."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_replay_of_a_recorded_bench_run_predicts_what_was_measured(tmp_path: Path) -> None:
    out = tmp_path / "comparison.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "replay_vs_real.py"), "--duration", "6", "--schedule", "8:6",
         "--profile-requests", "4", "--profile-batch", "12", "--keep", str(tmp_path / "run"), "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["requests"] >= 10 and result["ok"] == result["requests"]
    f = {name: (v["measured"], v["predicted"]) for name, v in result["figures"].items()}
    for name in ("TTFT p50 s (bench client)", "TTFT p95 s (bench client)"):
        measured, predicted = f[name]
        assert measured / 3 <= predicted <= measured * 3, (name, measured, predicted, run.stdout)
    measured, predicted = f["local share"]
    assert abs(predicted - measured) <= 0.3, (measured, predicted, run.stdout)
    measured, predicted = f["total cost $"]  # hosted tokens at litellm's price + the engine's GPU-hours
    assert abs(predicted - measured) <= 0.2 * measured, (measured, predicted, run.stdout)
    assert "| local share |" in run.stdout and "load average at end" in run.stdout
