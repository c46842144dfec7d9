"""Pricing on its own (no router): an engine's $/GPU-hour over its measured throughput in the poller's
latest snapshot, a hosted deployment's price per token, and nothing where no price is known."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import pytest

from policies.current import CurrentPolicy
from policies.decision import Target
from policies.live import EngineSnapshot
from policies.pricing import Pricing

from .support import compiled, engine, local_and_openai

POLICY = local_and_openai(
    'base_url: "http://127.0.0.1:9/v1", price: {usd_per_gpu_hour: 3.6, assumed_tokens_per_s: 100}',
    openai='base_url: "http://127.0.0.1:9/v1", price: {input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0}',
) + """\
  free:
    deployments:
      - {backend: local, model: smollm2}
"""


@dataclass
class Polled:
    snapshots: MappingProxyType[str, EngineSnapshot] = field(default_factory=lambda: MappingProxyType({}))


def test_engine_cost_follows_measured_throughput_hosted_cost_its_price() -> None:
    polled = Polled()
    pricing = Pricing(CurrentPolicy(compiled(POLICY)), polled)
    local = Target("local", "smollm2")
    # $3.6/h = $0.001/s; idle engine: the assumed 100 tokens/s → $1e-5 per token either way.
    assert pricing.cost_usd(local, 100, 50) == pytest.approx(150 * 1e-5)
    polled.snapshots = MappingProxyType({"local": engine(prefill_tps=1000.0, decode_tps=50.0)})
    assert pricing.cost_usd(local, 100, 50) == pytest.approx(100 * 1e-6 + 50 * 2e-5)
    assert pricing.cost_usd(Target("openai", "gpt-4o-mini"), 100, 50) == pytest.approx(100e-6 + 100e-6)
    assert pricing.cost_usd(Target("openai", "unknown-model"), 100, 50) == 0.0
    assert pricing.hosted_cost_usd("chat", 1_000_000, 0) == pytest.approx(1.0)
    assert pricing.hosted_cost_usd("free", 10, 10) is None  # no hosted deployment to compare with


def test_a_swapped_policy_prices_at_once() -> None:
    current = CurrentPolicy(compiled(POLICY))
    pricing = Pricing(current, Polled())
    current.current = compiled(POLICY.replace("input_usd_per_mtok: 1.0", "input_usd_per_mtok: 3.0"))
    assert pricing.cost_usd(Target("openai", "gpt-4o-mini"), 1_000_000, 0) == pytest.approx(3.0)
