"""slo_cost on hand-built states: the cheapest backend predicted to meet the SLO, else the fastest;
the team's SLO before the rule's; hysteresis across a threshold crossing, driven step by step."""
from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

import policies
from policies.compiled import CompiledPolicy, compile_policy
from policies.decide import apply_slo_out, decide
from policies.live import HealthView, InFlight, LiveState
from policies.loader import load_policy, load_policy_file
from policies.perf_model import EngineModel, PerfModel
from policies.router import PolicyRouter
from policies.strategies.slo_cost import still_out

from .support import NOW, engine, facts, live, local_and_openai

POLICY = local_and_openai(openai='base_url: "http://up/v1", expected_ttft_s: 0.6') + """\
slos:
  interactive: {ttft_p95_s: 1.0}
  relaxed: {ttft_p95_s: 10.0}
teams:
  batch: {slo: relaxed}
  anyone: {}
rules:
  - {name: r, strategy: slo_cost, candidates: [local, openai], slo: interactive, margin: 0.1, hysteresis: 0.2}
"""
# 1 ms per prefill token and nothing else: an engine's predicted TTFT is (queued + own) prompt tokens / 1000.
LINEAR = EngineModel(prefill_fixed_s=0.0, prefill_per_token_s=0.001, decode_fixed_s=0.0, decode_per_seq_s=0.0,
                     decode_per_context_token_s=0.0, max_num_batched_tokens=100_000)
COSTS = {"local": 0.0001, "openai": 0.01}  # local is the cheap one


def _compiled(text: str = POLICY) -> CompiledPolicy:
    loaded = load_policy(textwrap.dedent(text), "t.yaml", {})
    return compile_policy(loaded.policy, {}, perf_model=PerfModel({"local": LINEAR}, {}))


def _route(state: LiveState, team: str = "anyone", prompt: int = 500, text: str = POLICY):
    decision = decide(_compiled(text), facts(team=team, prompt=prompt, blocks={"local": 40}, costs=COSTS), state)
    return [t.backend for t in decision.targets], decision


def test_cheap_and_fast_enough_wins() -> None:
    backends, decision = _route(live({"local": engine()}))  # 500 tokens: 0.5 s ≤ 0.9 s
    assert backends == ["local", "openai"]
    assert "local: ttft p95 0.5s live, $0.0001 (in)" in decision.reason
    assert "openai: ttft p95 0.6s prior, $0.01 (in)" in decision.reason
    assert decision.reason.startswith("r: always → cheapest with ttft p95 ≤ 0.9s (slo 1s − 10%; once out, back below 0.72s)")


def test_cheap_but_slow_loses_to_dear_but_fast() -> None:
    backends, decision = _route(live({"local": engine(waiting=1)}))  # a 500-token prompt ahead: 1.0 s > 0.9 s
    assert backends == ["openai", "local"]
    assert "local: ttft p95 1s live, $0.0001 (out)" in decision.reason
    assert decision.slo_out == ((("local", 1.0), True),)


def test_slo_missed_everywhere_goes_to_the_fastest() -> None:
    state = live({"local": engine(waiting=2)}, health={"openai": HealthView(ttft_ewma_s=1.0, ttft_p95_s=2.0)})
    backends, decision = _route(state)  # local 1.5 s, openai's observed p95 2.0 s: both miss 0.9 s
    assert backends == ["local", "openai"]
    assert "none meets ttft p95 ≤ 0.9s" in decision.reason and "openai: ttft p95 2s p95" in decision.reason
    state = live({"local": engine(waiting=4)}, health={"openai": HealthView(ttft_ewma_s=1.0, ttft_p95_s=2.0)})
    assert _route(state)[0] == ["openai", "local"]  # local 2.5 s: now openai is the faster


def test_the_teams_slo_beats_the_rules() -> None:
    state = live({"local": engine(waiting=4)})  # 2.5 s: misses interactive, meets relaxed (9 s)
    assert _route(state, team="anyone")[0] == ["openai", "local"]
    assert _route(state, team="batch")[0] == ["local", "openai"]


def test_no_slo_known_orders_by_cost_alone() -> None:
    text = POLICY.replace(", slo: interactive", "")
    backends, decision = _route(live({"local": engine(waiting=4)}), text=text)  # 2.5 s
    assert backends == ["local", "openai"]
    assert "no slo for this team or rule; cheapest first" in decision.reason
    assert decision.slo_out == ()


def test_unknown_prediction_is_a_last_resort() -> None:
    backends, decision = _route(live({"local": engine(age=5.0)}))  # stale state: nothing known about local
    assert backends == ["openai", "local"]
    assert "local: ttft p95 ?" in decision.reason


def test_engines_that_do_not_fit_are_left_out() -> None:
    backends, decision = _route(live({"local": engine(free=5)}))
    assert backends == ["openai"] and "local: needs 40 KV blocks, 5 free" in decision.reason


def test_hysteresis_holds_across_a_threshold_crossing() -> None:
    # Bound 0.9 s; once out, back in only below 0.72 s. Local's prediction = prompt tokens / 1000.
    compiled, state = _compiled(), live({"local": engine()})
    sequence = [(500, "local"), (950, "openai"), (850, "openai"), (750, "openai"), (700, "local"),
                (850, "local"), (900, "local"), (910, "openai")]
    seen = []
    for prompt, _ in sequence:
        decision = decide(compiled, facts(team="anyone", prompt=prompt, blocks={"local": 40}, costs=COSTS), state)
        seen.append(decision.targets[0].backend)
        state = replace(state, slo_out=apply_slo_out(state.slo_out, decision.slo_out))
        if prompt == 850 and seen[-1] == "openai":
            assert "local: ttft p95 0.85s live, $0.0001 (out, held)" in decision.reason
    assert seen == [want for _, want in sequence]


def test_still_out_is_the_hysteresis_alone() -> None:
    assert not still_out(False, 0.9, 0.9, 0.2) and still_out(False, 0.91, 0.9, 0.2)
    assert still_out(True, 0.8, 0.9, 0.2) and not still_out(True, 0.71, 0.9, 0.2)


def test_the_router_keeps_the_hysteresis_between_requests() -> None:
    loaded = load_policy(textwrap.dedent(POLICY), "t.yaml", {})
    router = PolicyRouter(loaded, clock=lambda: 1000.0, price_table={})
    router.poller.snapshots = MappingProxyType({"local": engine(prefill_tps=1000.0)})
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    slow = router.decider.build_facts(body, "anyone", prompt_tokens=950)
    ok = router.decider.build_facts(body, "anyone", prompt_tokens=750)  # 0.75 s at the measured 1,000 tokens/s
    assert router.decider.route(ok).targets[0].backend == "local"
    assert router.decider.route(slow).targets[0].backend == "openai" and router.live.slo_out == {("local", 1.0)}
    assert router.decider.route(ok).targets[0].backend == "openai"  # 0.81 s: in bounds, but not back below 0.72 s


def test_the_example_policy_loads_and_routes_batch_locally() -> None:
    path = Path(policies.__file__).parent / "examples" / "slo_cost.yaml"
    loaded = load_policy_file(path, {"OPENAI_API_KEY": "sk-test"})
    compiled = compile_policy(loaded.policy, {}, perf_model=PerfModel({"local": LINEAR}, {}))
    state = live({"local": engine(waiting=3)})  # 2 s behind the queue
    pick = {team: decide(compiled, facts(team=team, prompt=500, blocks={"local": 40}, costs=COSTS), state)
            for team in ("default", "batch")}
    assert [t.backend for t in pick["default"].targets] == ["openai", "local"]
    assert [t.backend for t in pick["batch"].targets] == ["local", "openai"]


def test_the_queue_is_priced_not_capped_unless_the_rule_says_so() -> None:
    state = live({"local": engine(waiting=8)})  # beyond the backend's max_waiting (4); 4.5 s predicted
    assert _route(state, team="batch")[0] == ["local", "openai"]  # relaxed SLO: 9 s
    capped = POLICY.replace("hysteresis: 0.2}", "hysteresis: 0.2, max_waiting: 5}")
    backends, decision = _route(state, team="batch", text=capped)
    assert backends == ["openai"] and "local: queue 8 > 5" in decision.reason


def test_refusals_too_large_and_no_capacity() -> None:
    text = POLICY.replace("candidates: [local, openai]", "candidates: [local]")
    _, decision = _route(live({"local": engine(total=20)}), text=text)  # 40 blocks > its whole pool of 20
    assert decision.targets == () and decision.refusal == "too_large"
    _, decision = _route(live({"local": engine(free=5)}), text=text)
    assert decision.targets == () and decision.refusal == "no_capacity" and decision.retry_after_s > 0


def _sent_since(n: int, tokens: int, waiting: int = 0) -> LiveState:
    """An engine polled empty (64 slots) with `n` of ours, `tokens` prompt tokens in all, sent since the poll."""
    return live({"local": engine(waiting=waiting, max_num_seqs=64)},
                in_flight={"local": InFlight(n + waiting, n, 0, tokens)})


def test_ours_sent_since_the_poll_are_queued_prefill_at_their_own_size() -> None:
    predicted = dict(_route(_sent_since(3, 900), prompt=20)[1].predicted_ttft)
    # A 20-token prompt behind three 300-token ones sent since the poll: (900 + 20) / 1000 s, not (3 × 20 + 20).
    assert predicted["local"] == pytest.approx(0.92)
    assert _route(_sent_since(3, 900), prompt=20)[0] == ["openai", "local"]
    # A burst of 200-token prompts inside one poll interval, free slots or not: each one sent adds its
    # prefill to the next one's TTFT, and the fifth spills (1.0 s > 0.9 s).
    burst = [_route(_sent_since(n, 200 * n), prompt=200) for n in range(5)]
    assert [dict(d.predicted_ttft)["local"] for _, d in burst] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [b[0] for b, _ in burst] == ["local"] * 4 + ["openai"]
    # The next poll shows the three waiting: counted from it alone (sizes unknown: like this one), not twice.
    assert dict(_route(_sent_since(0, 0, waiting=3), prompt=20)[1].predicted_ttft)["local"] == pytest.approx(0.08)


def test_a_busy_engine_works_off_what_we_sent_since_the_poll_as_kv_fit_counts_it() -> None:
    """slo_cost prices the queue as LiveState.queued_prompt_tokens counts it for every strategy: an engine
    busy at the poll, prefilling at 1,000 tokens/s, has had 1 s for our 900 tokens sent since — none left
    ahead of a 20-token prompt (before: all 900 still counted, 0.92 s, and a steady stream it keeps up with
    read as a queue and spilled)."""
    busy = engine(running=2, prefill_tps=1000.0, max_num_seqs=64)
    state = live({"local": busy}, in_flight={"local": InFlight(5, 3, 0, 900, NOW - 1.0)})
    assert state.queued_prompt_tokens("local", 20) == 0
    predicted = dict(_route(state, prompt=20)[1].predicted_ttft)
    assert predicted["local"] == pytest.approx(0.02)
    assert _route(state, prompt=20)[0][0] == "local"
