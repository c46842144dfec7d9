"""The 'recorded (as served)' column: what the ledger says happened, costed like a replay so the two
can be compared (an engine priced by the GPU-hour costs its hours, not its per-request charges)."""
from __future__ import annotations

import pytest

from policies.compiled import CompiledPolicy, compile_policy
from policies.loader import load_policy
from policies.replay.summary import recorded_summary
from policies.replay.traffic import Recorded, TrafficRecord
from tests.unit.policies.replay.support import PERF


def _compiled(local_price: str) -> CompiledPolicy:
    text = f"""version: 1
backends:
  local: {{kind: engine, model: smollm2, price: {local_price}}}
  openai: {{kind: openai, base_url: "http://hosted/v1"}}
models:
  chat:
    deployments:
      - {{backend: local, model: smollm2}}
      - {{backend: openai, model: gpt-4o-mini}}
rules:
  - {{name: fit, strategy: kv_fit, local: [local], spill: [openai]}}
"""
    return compile_policy(load_policy(text, "test.yaml", {}).policy, {}, "test.yaml")


def _traffic(local_charge: float) -> list[TrafficRecord]:
    served = [Recorded("local", "ok", local_charge, 0.1, 1.0), Recorded("openai", "ok", 0.002, 0.4, 2.0),
              Recorded("", "no_capacity", 0.0, None, 0.0)]
    return [TrafficRecord(1000.0 + 1800.0 * i, "a", "chat", 100, 10, recorded=r) for i, r in enumerate(served)]


def test_a_gpu_hour_engine_costs_its_hours_and_its_charges_are_not_hosted() -> None:
    summary = recorded_summary(_compiled("{usd_per_gpu_hour: 2.0}"), _traffic(0.5), PERF, None)
    assert summary is not None
    assert summary.served_by == {"local": 1, "openai": 1} and summary.refused == {"no_capacity": 1}
    assert summary.hosted_cost_usd == pytest.approx(0.002)  # before: the engine's 0.5 counted as hosted
    assert summary.local_cost_usd == pytest.approx(2.0 * 1.0)  # one hour (3,600 s window) × $2, charges dropped
    assert summary.engines == {}  # the ledger has no KV or queue series: none shown rather than zeros


def test_a_per_token_engine_keeps_its_recorded_charges() -> None:
    summary = recorded_summary(_compiled("{input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0}"), _traffic(0.5),
                               PERF, None)
    assert summary is not None
    assert summary.hosted_cost_usd == pytest.approx(0.002) and summary.local_cost_usd == pytest.approx(0.5)
