"""PolicyRouter without sockets: reservations, health from results, learning, reload, shadow policy.
(Its poller against a real HTTP server is in tests/integration/policies.)"""
from __future__ import annotations

import textwrap
from dataclasses import replace
from types import MappingProxyType

import pytest

from policies.decision import Target
from policies.loader import load_policy
from policies.router import PolicyRouter
from tests.support.clock import ManualClock

from .support import NOW, engine, local_and_openai

POLICY = local_and_openai('base_url: "http://127.0.0.1:9/v1"',
                          openai='base_url: "http://127.0.0.1:9/v1"') + """\
health: {failure_threshold: 2, cooldown_s: 10}
rules:
  - name: fit
    strategy: kv_fit
    local: [local]
    spill: [openai]
"""
BODY = {"model": "chat", "max_tokens": 147, "messages": [{"role": "user", "content": "tiktoken is great!"}]}


def _router(text: str = POLICY, **kw) -> tuple[PolicyRouter, ManualClock]:
    clock = ManualClock(NOW)
    router = PolicyRouter(load_policy(textwrap.dedent(text), "p.yaml", {}), price_table={}, clock=clock,
                          wall_clock=lambda: 0.0, **kw)
    # 64 running slots, as our engine reports (requests sent since the poll count as queued all the same).
    router.poller.snapshots = MappingProxyType({"local": engine(free=25, total=100, max_num_seqs=64)})
    return router, clock


def _route(router: PolicyRouter) -> list[str]:
    facts = router.decider.build_facts(BODY, "default")
    return [t.backend for t in router.decider.route(facts).targets]


def test_in_flight_reservations_push_requests_to_spill() -> None:
    # A queue limit the ten sent since the poll stay within (they count as waiting): KV decides here.
    router, _ = _router(POLICY.replace("spill: [openai]", "spill: [openai]\n    max_waiting: 16"))
    facts = router.decider.build_facts(BODY, "default")
    assert facts.blocks_needed == {"local": 10}  # (13 + 147) / 16
    assert _route(router) == ["local", "openai"]
    # The engine reports 75 blocks used; holds only count once they exceed that.
    holds = [router.live.reserve("local", facts) for _ in range(8)]
    assert router.live.reserved_blocks() == {"local": 80} and _route(router) == ["local", "openai"]
    holds.append(router.live.reserve("local", facts))  # 90 held → 10 free: still fits exactly
    assert _route(router) == ["local", "openai"]
    holds.append(router.live.reserve("local", facts))
    assert _route(router) == ["openai"]
    router.live.release(holds.pop())
    router.live.release(holds[0])
    router.live.release(holds[0])  # idempotent
    assert router.live.reserved_blocks() == {"local": 80} and _route(router) == ["local", "openai"]
    for hold in holds:
        router.live.release(hold)
    assert router.live.reserved_blocks() == {}
    assert router.live.reserve("openai", facts) is None  # hosted backends hold nothing


def test_failures_open_the_circuit_and_a_probe_closes_it() -> None:
    router, clock = _router()
    router.live.record_result("local", ok=False)
    router.live.record_result("local", ok=False)
    assert _route(router) == ["openai"]
    clock.now += 10.0
    router.poller.snapshots = MappingProxyType({"local": replace(engine(free=25, total=100), taken_at=clock.now)})
    first = router.decider.route(router.decider.build_facts(BODY, "default"))
    assert [t.backend for t in first.targets] == ["local", "openai"]  # half-open: this request probes
    assert _route(router) == ["openai"]  # while the probe is out, others keep away
    router.live.record_result("local", ok=True, ttft_s=0.2)
    assert _route(router) == ["local", "openai"]
    assert router.live.live_state().health_of("local").ttft_ewma_s == 0.2


def test_stale_state_counts_as_unknown() -> None:
    router, clock = _router()
    clock.now += 2.0  # the last poll is now 2.1 s old
    assert _route(router) == ["openai", "local"]  # unknown: tried only after the spill


def test_usage_calibrates_and_feeds_the_team_p90() -> None:
    router, _ = _router()
    facts = router.decider.build_facts({**BODY, "max_tokens": None}, "default")
    assert facts.output_source == "default"
    router.live.record_usage(facts, Target("local", "smollm2"), prompt_tokens=26, completion_tokens=40)
    for n in (10, 20, 30, 50):
        router.live.record_usage(facts, Target("openai", "gpt-4o-mini"), prompt_tokens=None, completion_tokens=n)
    again = router.decider.build_facts({**BODY, "max_tokens": None}, "default")
    assert again.prompt_tokens_by_backend == {"local": 26, "openai": 13}
    assert (again.expected_output_tokens, again.output_source) == (50, "team_p90")


def test_reload_swaps_policy_keeps_health_and_pinned_requests_keep_theirs() -> None:
    router, _ = _router()
    pinned = router.policy.current
    for _ in range(2):
        router.live.record_result("openai", ok=False)
    router.reload(load_policy(textwrap.dedent(POLICY.replace("spill: [openai]", "spill: []")), "p.yaml", {}))
    assert router.policy.current is not pinned
    facts = router.decider.build_facts(BODY, "default", compiled=pinned)
    assert router.decider.route(facts, compiled=pinned).rule == "fit"
    assert router.live.live_state().health_of("openai").state == "open"  # learned health survives
    router.poller.snapshots = MappingProxyType({"local": engine(free=1, total=100)})
    decision = router.decider.route(router.decider.build_facts(BODY, "default"))
    assert decision.targets == () and decision.refusal == "no_capacity"


def test_shadow_policy_is_recorded_never_applied() -> None:
    shadow = load_policy(textwrap.dedent(POLICY.replace("local: [local]\n    spill: [openai]",
                                                        "local: [local]\n    spill: []\n    max_waiting: 0")),
                         "shadow.yaml", {})
    router, _ = _router(shadow=shadow)
    router.poller.snapshots = MappingProxyType({"local": engine(free=25, total=100, waiting=1)})
    decision = router.decider.route(router.decider.build_facts(BODY, "default"))
    assert [t.backend for t in decision.targets] == ["local", "openai"]
    assert decision.shadow_rule == "shadow-policy:fit" and decision.shadow_targets == ()
    assert decision.shadow_differs


def test_unknown_model_raises_routing_error() -> None:
    from policies.errors import RoutingError

    router, _ = _router()
    with pytest.raises(RoutingError):
        router.decider.build_facts({**BODY, "model": "nope"}, "default")
