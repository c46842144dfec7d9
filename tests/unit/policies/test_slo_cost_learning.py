"""slo_cost keeps its engine predictions honest live: requests this gateway sent since the last state
poll count as queue ahead, and the ratio of observed to predicted TTFT scales the model's figure."""
from __future__ import annotations

import re
import textwrap
from dataclasses import replace
from types import MappingProxyType

import pytest

from policies.loader import LoadedPolicy, load_policy
from policies.perf_model import EngineModel, PerfModel
from policies.router import PolicyRouter
from policies.ttft_scale import BOUNDS, HALF_LIFE_S, TtftScale
from tests.support.clock import ManualClock

from .support import NOW, engine, local_and_openai

POLICY = local_and_openai(openai='base_url: "http://up/v1", expected_ttft_s: 0.6') + """\
slos:
  interactive: {ttft_p95_s: 1.0}
teams:
  anyone: {}
rules:
  - {name: r, strategy: slo_cost, candidates: [local, openai], slo: interactive, margin: 0.1, hysteresis: 0.2}
"""
# 1 ms per prefill token and nothing else: an engine's predicted TTFT is (queued + own) prompt tokens / 1000.
LINEAR = EngineModel(prefill_fixed_s=0.0, prefill_per_token_s=0.001, decode_fixed_s=0.0, decode_per_seq_s=0.0,
                     decode_per_context_token_s=0.0, max_num_batched_tokens=100_000)


def _router(clock: ManualClock | None = None) -> PolicyRouter:
    clock = clock or ManualClock(NOW)
    loaded = load_policy(textwrap.dedent(POLICY), "t.yaml", {})
    router = PolicyRouter(LoadedPolicy(loaded.policy, loaded.source, (), PerfModel({"local": LINEAR}, {})),
                          clock=clock, price_table={})
    _poll(router, clock.now)
    return router


def _poll(router: PolicyRouter, now: float) -> None:
    """An idle engine that says it has 64 running slots, polled just now."""
    router.poller.snapshots = MappingProxyType({"local": replace(engine(), taken_at=now - 0.1, max_num_seqs=64)})


def _facts(router: PolicyRouter, prompt: int):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    return router.decider.build_facts(body, "anyone", prompt_tokens=prompt)


def test_each_observation_is_paired_with_the_prediction_made_when_it_was_routed() -> None:
    scale = TtftScale(alpha=0.2)
    scale.observed("local", 5.0, 10.0)  # nothing predicted for it: not an engine slo_cost scores
    scale.predicted("local", 0.1, 0.0)  # a request that never got a first token (it failed)
    assert scale.scales(1.0) == {}
    scale.predicted("local", 0.5, 1.0)
    scale.observed("local", 1.0, 2.0)  # routed at 1.0, its first token a second later
    assert scale.scales(2.0) == {"local": pytest.approx(2.0)}  # not thrown off by the failed one's 0.1 s
    scale.observed("local", 0.2, 12.0)  # routed when nothing was: another rule's, not paired
    assert scale.scales(2.0) == {"local": pytest.approx(2.0)}
    # Without news it fades toward 1: half the log ratio per HALF_LIFE_S.
    assert scale.scales(2.0 + HALF_LIFE_S) == {"local": pytest.approx(2.0 ** 0.5)}
    now = 100.0
    for _ in range(40):  # a model 100× off is a wrong model file: the scale stops at its bound
        scale.predicted("local", 0.01, now)
        scale.observed("local", 1.0, now + 1.0)
        now += 3.0
    assert scale.scales(now)["local"] == BOUNDS[1]


def test_requests_sent_since_the_poll_are_queue_ahead() -> None:
    router = _router()
    for _ in range(3):  # a burst of 200-token prompts before the next poll
        facts = _facts(router, 200)
        assert router.decider.route(facts).targets[0].backend == "local"
        router.live.reserve("local", facts)
    decision = router.decider.route(_facts(router, 200))
    # Three of ours ahead (still waiting or prefilling; the poll shows none) + its own: 800 tokens.
    assert "local: ttft p95 0.8s live" in decision.reason


def test_the_router_learns_how_far_the_model_is_off_and_slo_cost_uses_it() -> None:
    clock = ManualClock(NOW)
    router = _router(clock)
    for _ in range(3):
        decision = router.decider.route(_facts(router, 300))  # the model says 0.3 s
        assert decision.targets[0].backend == "local" and decision.predicted_ttft == (("local", 0.3),)
        clock.now += 0.6
        router.live.record_result("local", ok=True, ttft_s=0.6)  # the engine took twice that
        _poll(router, clock.now)
    decision = router.decider.route(_facts(router, 300))
    shown = re.search(r"local: ttft p95 ([\d.]+)s live×2, \$0 \(in\)", decision.reason)
    assert shown and 0.58 < float(shown.group(1)) <= 0.6  # ×2, a little faded since the last pair
    decision = router.decider.route(_facts(router, 500))  # 0.5 s by the model, ~1.0 s as it has been going: out
    assert decision.targets[0].backend == "openai" and "live×2, $0 (out)" in decision.reason
    assert decision.predicted_ttft == (("local", 0.5),)  # the model's own figure, for learning
