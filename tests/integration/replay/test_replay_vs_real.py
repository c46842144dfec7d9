"""The simulator against reality, small: bench/replay_vs_real.py profiles the engine (tiny-random on
this CPU), sends a few seconds of Poisson traffic through `hybridgw serve` (kv_fit: local engine,
spill to the simulated hosted API) and replays the gateway's ledger. How close the prediction comes
depends on this machine's load, so the bars are a benchmark (docs/benchmarks.md); here only loose
tolerances on the replay fitted to the run itself. The test checks that the whole loop runs and yields
a measured and a predicted value for every figure,
the TTFT breakdown from the engine's spans (and inside the engine: bench/replay_intake.py), the held-out
check's tools on the kept run, and the per-request comparison with the gateway's recorded engine views."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_a_recorded_bench_run_is_replayed_figure_by_figure(tmp_path: Path) -> None:
    out = tmp_path / "comparison.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "replay_vs_real.py"), "--duration", "6", "--schedule", "8:6",
         "--profile-requests", "4", "--profile-batch", "12", "--keep", str(tmp_path / "run"), "--json", str(out),
         "--seed", "3", "--spans"],
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
    # Loose tolerances on the replay fitted to the run's own ledger (the real figures, held out and on a quiet
    # box, are in docs/benchmarks.md): its median TTFT within a factor of two, its local share within 10
    # points, its total cost within 10% — a replay that mis-accounts cost or routes differently fails here.
    measured = {name: v["measured"] for name, v in result["figures"].items()}
    assert 0.5 <= calibrated["TTFT p50 s (gateway ledger)"] / measured["TTFT p50 s (gateway ledger)"] <= 2, result
    assert abs(calibrated["local share"] - measured["local share"]) <= 0.10, result
    assert calibrated["total cost $"] == pytest.approx(measured["total cost $"], rel=0.10), result
    assert "| local share |" in run.stdout and "load average at end" in run.stdout
    # --spans: local TTFTs matched to the engine's own spans and broken into phases.
    matched = re.search(r"local TTFT by phase \((\d+) of (\d+) engine spans matched\)", run.stdout)
    assert matched and int(matched[1]) > 0, run.stdout[-3000:]
    assert "| busy p50 |" in run.stdout
    # --keep with --spans keeps the engine's log: each local request's wait inside the engine, from the
    # attributes the real engine put on its spans (bench/replay_intake.py).
    intake = subprocess.run([sys.executable, str(ROOT / "bench" / "replay_intake.py"), str(tmp_path / "run")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert intake.returncode == 0, intake.stdout[-2000:] + intake.stderr[-3000:]
    local = re.search(r"\| all \| (\d+) \|", intake.stdout)
    assert local and int(local[1]) == int(matched[1]), intake.stdout[-3000:]

    # The kept run's fitted model predicts a kept run (here itself) through bench/replay_cross.py, carried to
    # its engine's CPU share (the engine's own step totals over the run's window).
    window = json.loads((tmp_path / "run" / "window.json").read_text())
    assert window["seed"] == 3
    speed = window["engine_speed"]
    assert speed["steps"] > 0 and 0 < speed["cpu_share"] <= 1.01 and speed["step_cpu_s"] <= speed["step_wall_s"] * 1.01
    # ... and the host around it: the gateway's CPU over the run, its /healthz answers (bench/replay_host_share.py).
    host = window["host"]
    assert host["gateway_cpu_s"] > 0 and 0 < host["gateway_busy"] <= 1.01 and host["wall_s"] > 0
    assert host["healthz_n"] > 0 and host["healthz_p50_s"] > 0
    model = json.loads((tmp_path / "run" / "calibrated-model.json").read_text())
    assert {"request_overhead_s", "frontend_service_s"} <= set(model["engines"]["local"])
    # The engine's burst budget (its default) is kept with the run, and the fit keeps it (#13).
    perf = json.loads((tmp_path / "run" / "perf.json").read_text())
    kept, fitted = perf["engines"]["local"], model["engines"]["local"]
    assert kept["burst_batched_tokens"] == fitted["burst_batched_tokens"] == 256
    cross = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "replay_cross.py"), "--fit", str(tmp_path / "run"), "--check",
         str(tmp_path / "run"), "--json", str(tmp_path / "cross.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert cross.returncode == 0, cross.stdout[-2000:] + cross.stderr[-3000:]
    crossed = json.loads((tmp_path / "cross.json").read_text())
    checked = crossed["checks"][0]
    assert checked["figures"]["local share"]["measured"] == figures["local share"][0]
    assert crossed["model"]["engines"]["local"]["cpu_share"] == speed["cpu_share"] and checked["carried"]
    # At its own share the carried replay is the unscaled one.
    assert checked["figures"]["local share"]["predicted"] == checked["figures"]["local share"]["unscaled"]
    grid = subprocess.run([sys.executable, str(ROOT / "bench" / "replay_grid.py"), str(tmp_path / "run"), "--json",
                           str(tmp_path / "grid.json")], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert grid.returncode == 0, grid.stdout[-2000:] + grid.stderr[-3000:]
    (own,) = json.loads((tmp_path / "grid.json").read_text())  # the run against itself: in-sample
    share_off = checked["figures"]["local share"]["predicted"] - figures["local share"][0]
    assert own["unscaled"][2] == own["carried"][2] == pytest.approx(share_off * 100)

    # Request by request against the ledger's engine views: decide() on the view the real router recorded
    # gives the choice it made; forced to the recorded routing, the replay serves the measured share.
    decisions = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "replay_decisions.py"), str(tmp_path / "run"), "--poll-clock",
         "--json", str(tmp_path / "decisions.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert decisions.returncode == 0, decisions.stdout[-2000:] + decisions.stderr[-3000:]
    found = json.loads((tmp_path / "decisions.json").read_text())
    for mode in ("forced", "own"):
        kinds = found[mode]["decisions"]
        assert sum(kinds.values()) == result["requests"] and kinds.get("no recorded view", 0) == 0, kinds
        assert kinds.get("not the view", 0) == 0, kinds
    assert found["forced"]["replay local share"] == found["measured local share"]
