"""Decisions and their reasons, byte for byte, over a grid of requests and states on four policies
(slo_cost, kv_fit with conditions and a shadow rule, cheapest_within_slo, first_match): pinned to
the digest main's eager code (5e16ca8) gave, so reasons built when read (policies/lazy_text.py) and
the faster dataclass inits (observability/fast_init.py) say and decide exactly what they did."""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import FrozenInstanceError
from types import MappingProxyType

import pytest

from policies.calibration import Calibration
from policies.decide import apply_slo_out, decide
from policies.facts import build_facts
from policies.live import HealthView, InFlight, LiveState
from policies.tokens import TokenCounter
from tests.unit.policies.support import NOW, compiled, engine, local_and_openai

HEAD = local_and_openai("max_waiting: 4, default_max_tokens: 512",
                        openai='base_url: "http://up/v1", expected_ttft_s: 0.6') + """\
slos:
  interactive: {ttft_p95_s: 1.0}
  relaxed: {ttft_p95_s: 10.0}
teams:
  batch: {slo: relaxed, tags: {tier: batch}}
  anyone: {}
"""
POLICIES = {
    "slo_cost": HEAD + "rules:\n"
                       "  - {name: r, strategy: slo_cost, candidates: [local, openai], slo: interactive}\n",
    "kv_fit": HEAD + """rules:
  - {name: watch, shadow: true, route: [openai]}
  - {name: big, when: {prompt_tokens: {gt: 2000}, headers: {x-tier: {eq: gold}}}, route: [openai]}
  - {name: fit, when: {team: {in: [anyone, batch]}}, strategy: kv_fit, local: [local], spill: [openai]}
""",
    "cheapest": HEAD + "rules:\n"
                       "  - {name: c, strategy: cheapest_within_slo, candidates: [local, openai], slo: interactive}\n",
    "first_match": HEAD + "rules:\n  - {name: only-local, when: {prompt_tokens: {lt: 50}}, route: [local]}\n",
}
PRICES = {"gpt-4o-mini": {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}}
ENGINES = [None, engine(free=20, waiting=0), engine(free=900, waiting=0, prefill_tps=2000.0, decode_tps=50.0),
           engine(free=900, waiting=9, running=4, prefill_tps=500.0, decode_tps=40.0), engine(free=900, age=5.0),
           engine(free=900, max_model_len=4096, prefill_tps=800.0)]
HEALTH = [{}, {"openai": HealthView(ttft_p95_s=0.4)}, {"openai": HealthView(ttft_ewma_s=2.5)},
          {"openai": HealthView(state="open", retry_at=NOW + 7.0, consecutive_failures=3)}]
REQUESTS = [("anyone", 30, None, {}), ("anyone", 1200, 256, {}), ("batch", 3000, None, {"x-tier": "gold"}),
            ("anyone", 7000, None, {})]


def _decisions(name: str) -> list[str]:
    """Every (request, state) of the grid, twice (the second time with the first's hysteresis applied)."""
    policy = compiled(POLICIES[name], prices=PRICES)
    rows = []
    for snap, health, (team, prompt, max_tokens, headers) in itertools.product(ENGINES, HEALTH, REQUESTS):
        slo_out: frozenset[tuple[str, float]] = frozenset()
        for _ in range(2):
            engines = MappingProxyType({"local": snap} if snap else {})
            state = LiveState(NOW, engines, MappingProxyType(health), {}, 1.0, in_flight={"local": InFlight(2, 1, 0)},
                              slo_out=slo_out)
            body = {"model": "chat", **({"max_tokens": max_tokens} if max_tokens else {})}
            facts = build_facts(policy, body, team, state, counter=TokenCounter(), calibration=Calibration(),
                                headers=headers, prompt_tokens=prompt)
            d = decide(policy, facts, state)
            rows.append(repr(([t.backend for t in d.targets], d.rule, d.strategy, d.reason, d.refusal,
                              d.retry_after_s, d.slo_out, d.predicted_ttft, d.shadow_rule,
                              [t.backend for t in d.shadow_targets], d.shadow_reason, facts)))
            slo_out = apply_slo_out(slo_out, d.slo_out)
    return rows


# sha1 of "\n".join(_decisions(name)), computed with main's code (5e16ca8) before reasons became lazy.
PINNED = {
    "slo_cost": "5fe07d8c5ab2d5187cd0ac01a7de44f59704f435",
    "kv_fit": "0ccc15f1488ccf4569329fcff84fd013b6e15c39",
    "cheapest": "1c25da90f3618ce440323f8a5a1a834b7c3dbebd",
    "first_match": "b89ede77aea016e41c68139ebbe0aded1ebf56e8",
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_decisions_and_reasons_are_main_s_byte_for_byte(name: str) -> None:
    rows = _decisions(name)
    assert len(set(rows)) > 10  # the grid reaches many different decisions, not one repeated
    assert hashlib.sha1("\n".join(rows).encode()).hexdigest() == PINNED[name]


def test_a_lazy_reason_is_built_once_and_the_decision_stays_frozen() -> None:
    policy = compiled(POLICIES["slo_cost"], prices=PRICES)
    state = LiveState(NOW, MappingProxyType({"local": engine(free=900, prefill_tps=2000.0)}), {}, {}, 1.0)
    facts = build_facts(policy, {"model": "chat"}, "anyone", state, counter=TokenCounter(),
                        calibration=Calibration(), prompt_tokens=400)
    decision = decide(policy, facts, state)
    first = decision.reason
    assert first.startswith("r: always → cheapest with ttft p95 ≤ 0.9s") and "local: ttft p95" in first
    assert decision.reason is first  # kept, not rebuilt
    with pytest.raises(FrozenInstanceError):
        decision.reason = "changed"  # type: ignore[misc]
