"""The built-in engine model replays the measured 64-stream server bench (docs/benchmarks.md,
2026-11-26 15:19: 1,097 tok/s, TTFT p50 / p95 0.20 / 0.27 s, ITL p50 55 ms) within 25%."""
from __future__ import annotations

import pytest

from policies.loader import load_policy
from policies.perf_model import PerfModel
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.traffic import TrafficRecord

POLICY = """\
version: 1
backends:
  local: {kind: engine, model: smollm2}
models:
  smollm2: {deployments: [{backend: local, model: smollm2}]}
rules:
  - {name: all, route: [local]}
"""


def _request(t: float) -> TrafficRecord:
    # The bench's prompt: 39 tokens, the first 32 shared by every request (the chat template); 64 new tokens.
    return TrafficRecord(t, "t", "smollm2", 39, 64, max_tokens=64, prefix_id="chat", prefix_tokens=32)


def test_default_engine_model_predicts_the_64_stream_bench() -> None:
    traffic = [_request(0.0)] + [_request(100.0 + i * 0.001) for i in range(64)]  # a warm-up, then 64 at once
    out = replay(load_policy(POLICY, "p.yaml", {}), traffic, ReplaySetup(PerfModel({}, {}), {}))
    ttft = sorted(t for t in out.ttft[1:] if t is not None)
    ends = [traffic[i].time + (out.e2e[i] or 0.0) for i in range(1, 65)]
    itl = sorted(((out.e2e[i] or 0.0) - (out.ttft[i] or 0.0)) / 63 for i in range(1, 65))
    assert 64 * 64 / (max(ends) - 100.0) == pytest.approx(1097, rel=0.25)
    assert ttft[31] == pytest.approx(0.20, rel=0.25)
    assert ttft[60] == pytest.approx(0.27, rel=0.25)
    assert itl[31] == pytest.approx(0.055, rel=0.25)
