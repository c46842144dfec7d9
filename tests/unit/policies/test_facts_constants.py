"""What build_facts and decide() look up once per compiled policy instead of per request gives the
same facts as asking each time: an engine's price per token is fixed, a $/GPU-hour one follows the
snapshot's measured rates; LiveState.any_open agrees with health_of, unreachable engines included."""
from __future__ import annotations

import itertools

import pytest

from policies.calibration import Calibration
from policies.estimator import local_price
from policies.facts import build_facts
from policies.live import HealthView
from policies.tokens import TokenCounter

from .support import NOW, compiled, engine, live

POLICY = """
backends:
  fixed: {kind: engine, model: m1, base_url: "http://127.0.0.1:9/v1",
          price: {input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0}}
  hourly: {kind: engine, model: m2, base_url: "http://127.0.0.1:9/v1",
           price: {usd_per_gpu_hour: 3.6, assumed_tokens_per_s: 100}}
  free: {kind: engine, model: m3, base_url: "http://127.0.0.1:9/v1"}
  openai: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  chat:
    deployments:
      - {backend: fixed, model: m1}
      - {backend: hourly, model: m2}
      - {backend: free, model: m3}
      - {backend: openai, model: gpt-4o-mini}
prices:
  gpt-4o-mini: {input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}
"""


@pytest.mark.parametrize("rates", [(0.0, 0.0), (2000.0, 50.0), (500.0, 10.0)])
def test_engine_prices_per_token_and_per_gpu_hour(rates: tuple[float, float]) -> None:
    policy = compiled(POLICY)
    snaps = {n: engine(prefill_tps=rates[0], decode_tps=rates[1]) for n in ("fixed", "hourly", "free")}
    state = live(snaps)
    facts = build_facts(policy, {"model": "chat", "max_tokens": 50}, "default", state, counter=TokenCounter(),
                        calibration=Calibration(), prompt_tokens=400)
    spec = policy.policy.backends
    expected = {n: local_price(spec[n].price, snaps[n]).cost(400, 50) for n in ("fixed", "hourly")}
    assert facts.est_cost_usd == {**expected, "openai": 400 * 0.15e-6 + 50 * 0.6e-6}  # "free": no price, no cost
    hourly = 3.6 / 3600 / (rates[0] or 100) * 400 + 3.6 / 3600 / (rates[1] or 100) * 50
    assert facts.est_cost_usd["hourly"] == pytest.approx(hourly)
    assert facts.est_cost_usd["fixed"] == pytest.approx(400e-6 + 100e-6)


def test_any_open_agrees_with_health_of() -> None:
    views = {"closed": HealthView(), "open": HealthView("open", NOW + 5), "half": HealthView("half_open")}
    names = ("closed", "open", "half", "unknown")
    for unreachable in ((), ("closed",), ("unknown",)):
        state = live(health=views, unreachable=unreachable)
        for size in range(len(names) + 1):
            for backends in itertools.permutations(names, size):
                assert state.any_open(backends) == any(state.health_of(b).state == "open" for b in backends)
