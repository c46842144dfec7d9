"""Decision tables on the pure decide(): which targets, in which order, by which rule, and why."""
from __future__ import annotations

import pytest

from policies.decide import decide
from policies.live import HealthView

from .support import NOW, TUESDAY_NOON_UTC, compiled, engine, facts, live, local_and_openai

SPILL = """
backends:
  local: {kind: engine, model: smollm2, max_waiting: 2}
  local2: {kind: engine, model: smollm2}
  openai: {kind: openai, base_url: "http://up/v1"}
models:
  chat:
    deployments:
      - {backend: local, model: smollm2}
      - {backend: local2, model: smollm2}
      - {backend: openai, model: gpt-4o-mini}
  local-only:
    deployments: [{backend: local, model: smollm2}]
rules:
  - name: fit
    strategy: kv_fit
    local: [local]
    spill: [openai]
"""


def _backends(decision) -> list[str]:
    return [t.backend for t in decision.targets]


@pytest.mark.parametrize(("snap", "reserved", "expected", "why"), [
    (engine(free=1000), 0, ["local", "openai"], "local: fits (13 of 1000 free blocks, 0 waiting)"),
    (engine(free=12), 0, ["openai"], "local: needs 13 KV blocks, 12 free"),
    (engine(free=13), 0, ["local", "openai"], "fits (13 of 13 free blocks"),
    # The engine shows 500 used; our in-flight requests hold 990 → 10 left, not 500.
    (engine(free=500), 990, ["openai"], "local: needs 13 KV blocks, 10 free"),
    (engine(free=1000, waiting=3), 0, ["openai"], "local: queue 3 > 2"),
    (engine(free=1000, waiting=2), 0, ["local", "openai"], "2 waiting"),
    # Stale or missing state is unknown, not healthy: after the spill, as a last resort.
    (engine(free=1000, age=1.5), 0, ["openai", "local"], "local: state unknown"),
    (None, 0, ["openai", "local"], "local: state unknown"),
    (engine(free=1000, max_model_len=150), 0, ["openai"], "local: 200 tokens exceed its context of 150"),
])
def test_kv_fit_spills_when_local_does_not_fit(snap, reserved, expected, why) -> None:
    policy = compiled(SPILL)
    state = live({"local": snap} if snap else {}, reserved={"local": reserved})
    decision = decide(policy, facts(blocks={"local": 13} if snap and snap.age(NOW) < 1 else {}), state)
    assert _backends(decision) == expected
    assert decision.rule == "fit" and decision.strategy == "kv_fit"
    assert why in decision.reason and not decision.refusal


def test_kv_fit_without_spill_refuses_with_retry_after() -> None:
    policy = compiled(SPILL)
    decision = decide(policy, facts(model="local-only", blocks={"local": 13}), live({"local": engine(free=3, decode_tps=16)}))
    assert decision.targets == ()
    assert decision.refusal == "no_capacity"
    assert decision.retry_after_s == pytest.approx(10.0)  # 10 blocks short × 16 tokens ÷ 16 tok/s
    assert "nowhere to spill" in decision.reason


def test_kv_fit_with_unknown_state_and_no_spill_tries_the_engine_last_resort() -> None:
    decision = decide(compiled(SPILL), facts(model="local-only"), live())
    assert _backends(decision) == ["local"] and not decision.refusal
    assert decision.reason == "fit: always → nothing known to fit, trying local anyway: local: state unknown"


def test_engine_pool_is_ordered_by_queue_then_headroom() -> None:
    policy = compiled(SPILL.replace("local: [local]", "local: [local, local2]"))
    state = live({"local": engine(free=100), "local2": engine(free=900)})
    assert _backends(decide(policy, facts(blocks={"local": 10, "local2": 10}), state)) == ["local2", "local", "openai"]
    state = live({"local": engine(free=100), "local2": engine(free=900, waiting=3)})
    assert _backends(decide(policy, facts(blocks={"local": 10, "local2": 10}), state)) == ["local", "local2", "openai"]


RULES = local_and_openai() + """\
teams:
  legal: {allowed_backends: [local]}
rules:
  - name: priority
    when: {headers: {x-priority: [high, urgent]}}
    route: [openai, local]
  - name: long
    when:
      any:
        - prompt_tokens: {gt: 4000}
        - total_tokens: {gte: 6000}
    route: [openai]
  - name: over-budget
    when: {over_budget: true}
    route: [local]
  - name: nights-berlin
    when: {time: {between: ["22:00", "06:00"], tz: Europe/Berlin}}
    route: [local]
  - name: weekend
    when: {time: {days: [sat, sun]}}
    route: [local]
  - name: research-streams
    when: {team: {in: [research]}, stream: true}
    route: [local, openai]
"""

HOUR = 3600.0


@pytest.mark.parametrize(("kwargs", "rule", "expected"), [
    ({}, "default", ["local", "openai"]),
    ({"headers": {"x-priority": "high"}}, "priority", ["openai", "local"]),
    ({"headers": {"x-priority": "low"}}, "default", ["local", "openai"]),
    ({"prompt": 4001}, "long", ["openai"]),
    ({"prompt": 4000, "output": 1999}, "default", ["local", "openai"]),
    ({"prompt": 4000, "output": 2000}, "long", ["openai"]),
    ({"over_budget": True}, "over-budget", ["local"]),
    ({"now": TUESDAY_NOON_UTC + 10 * HOUR}, "nights-berlin", ["local"]),  # 23:00 Berlin
    ({"now": TUESDAY_NOON_UTC + 16 * HOUR}, "nights-berlin", ["local"]),  # 05:00 Berlin (wraps midnight)
    ({"now": TUESDAY_NOON_UTC + 17 * HOUR}, "default", ["local", "openai"]),  # 06:00 Berlin: window over
    ({"now": TUESDAY_NOON_UTC + 4 * 24 * HOUR}, "weekend", ["local"]),  # Saturday noon UTC
    ({"team": "research", "stream": True}, "research-streams", ["local", "openai"]),
    ({"team": "research"}, "default", ["local", "openai"]),
    # The privacy bound: legal's high-priority request may not leave for openai.
    ({"team": "legal", "headers": {"x-priority": "high"}}, "priority", ["local"]),
    ({"team": "legal", "prompt": 5000}, "default", ["local"]),  # 'long' has nothing legal may use
])
def test_first_match_rules(kwargs, rule, expected) -> None:
    decision = decide(compiled(RULES), facts(**kwargs), live())
    assert (decision.rule, _backends(decision)) == (rule, expected)
    assert decision.reason


def test_reason_shows_the_values_that_matched() -> None:
    decision = decide(compiled(RULES), facts(prompt=5000), live())
    assert decision.reason == "long: any(prompt_tokens > 4000 | total_tokens >= 6000) → route openai"
    decision = decide(compiled(RULES), facts(headers={"x-priority": "urgent"}), live())
    assert decision.reason == "priority: header x-priority in ['high', 'urgent'] (urgent) → route openai, local"


def test_team_without_any_usable_backend_is_refused() -> None:
    policy = compiled(RULES.replace("allowed_backends: [local]", "allowed_backends: []"))
    decision = decide(policy, facts(team="legal"), live())
    assert decision.targets == () and decision.refusal == "not_allowed"


def test_open_circuit_is_skipped_and_all_open_means_retry_later() -> None:
    policy = compiled(RULES)
    open_openai = {"openai": HealthView("open", retry_at=NOW + 4.0)}
    decision = decide(policy, facts(headers={"x-priority": "high"}), live(health=open_openai))
    assert _backends(decision) == ["local"]
    both = {**open_openai, "local": HealthView("open", retry_at=NOW + 2.5)}
    decision = decide(policy, facts(headers={"x-priority": "high"}), live(health=both))
    assert decision.targets == () and decision.refusal == "no_healthy_backend"
    assert decision.retry_after_s == pytest.approx(2.5)
    half_open = {"openai": HealthView("half_open", retry_at=NOW - 1)}
    assert _backends(decide(policy, facts(headers={"x-priority": "high"}), live(health=half_open))) == ["openai", "local"]


SLO = """
backends:
  local: {kind: engine, model: smollm2, price: {input_usd_per_mtok: 0.01, output_usd_per_mtok: 0.01}}
  openai: {kind: openai, base_url: "http://up/v1", expected_ttft_s: 0.6}
  anthropic: {kind: litellm, model: anthropic}
models:
  chat:
    deployments:
      - {backend: local, model: smollm2}
      - {backend: openai, model: gpt-4o-mini}
      - {backend: anthropic, model: claude-x}
slos:
  fast: {ttft_p95_s: 1.0}
rules:
  - name: cheap
    strategy: cheapest_within_slo
    candidates: [local, openai, anthropic]
    slo: fast
"""
COSTS = {"local": 0.001, "openai": 0.01, "anthropic": 0.02}


def test_cheapest_within_slo_orders_by_cost_among_those_meeting_it() -> None:
    state = live({"local": engine(prefill_tps=1000.0)}, health={"anthropic": HealthView(ttft_ewma_s=0.3)})
    decision = decide(compiled(SLO), facts(prompt=500, blocks={"local": 40}, costs=COSTS), state)
    assert _backends(decision) == ["local", "openai", "anthropic"]
    assert "local: ttft 0.5s" in decision.reason


def test_cheapest_within_slo_puts_slow_backends_last_fastest_first() -> None:
    # local: 500 tokens + 4 queued prompts of 500 at 1000 tok/s → 2.5 s predicted; openai's p95 1.4 s.
    state = live({"local": engine(prefill_tps=1000.0, waiting=4)},
                 health={"openai": HealthView(ttft_ewma_s=0.5, ttft_p95_s=1.4), "anthropic": HealthView(ttft_ewma_s=0.9)})
    decision = decide(compiled(SLO), facts(prompt=500, blocks={"local": 40}, costs=COSTS), state)
    assert _backends(decision) == ["anthropic", "openai", "local"]
    state = live({"local": engine(prefill_tps=1000.0, waiting=4)}, health={"anthropic": HealthView(ttft_ewma_s=3.0)})
    decision = decide(compiled(SLO.replace("expected_ttft_s: 0.6", "expected_ttft_s: 2.0")),
                      facts(prompt=500, blocks={"local": 40}, costs=COSTS), state)
    assert _backends(decision) == ["openai", "local", "anthropic"]
    assert decision.reason.startswith("cheap: always → none meets ttft p95 ≤ 1s; fastest first")


def test_cheapest_within_slo_skips_engines_that_do_not_fit() -> None:
    state = live({"local": engine(free=5)})
    decision = decide(compiled(SLO), facts(blocks={"local": 40}, costs=COSTS), state)
    assert _backends(decision) == ["openai", "anthropic"]
    assert "local: needs 40 KV blocks, 5 free" in decision.reason


def test_shadow_rule_is_recorded_not_applied() -> None:
    text = RULES.replace("rules:\n", "rules:\n  - name: try-hosted\n    shadow: true\n    route: [openai]\n")
    decision = decide(compiled(text), facts(), live())
    assert decision.rule == "default" and _backends(decision) == ["local", "openai"]
    assert decision.shadow_rule == "try-hosted" and [t.backend for t in decision.shadow_targets] == ["openai"]
    assert decision.shadow_differs


STATE_RULES = local_and_openai() + """\
rules:
  - name: local-busy
    when: {state: {local: {waiting: {gt: 5}}}}
    route: [openai, local]
  - name: local-nearly-full
    when: {state: {local: {kv_free_ratio: {lt: 0.1}}}}
    route: [openai, local]
  - name: local-unhealthy
    when: {state: {local: {healthy: false}}}
    route: [openai]
"""


@pytest.mark.parametrize(("snap", "rule"), [
    (engine(waiting=6), "local-busy"),
    (engine(free=50), "local-nearly-full"),
    (engine(free=500, age=5.0), "local-unhealthy"),  # stale state: not healthy
    (engine(free=500), "default"),
])
def test_conditions_on_live_state(snap, rule) -> None:
    decision = decide(compiled(STATE_RULES), facts(blocks={"local": 10}), live({"local": snap}))
    assert decision.rule == rule


def test_unknown_alias() -> None:
    decision = decide(compiled(RULES), facts(model="nope"), live())
    assert decision.targets == () and decision.refusal == "not_allowed"
