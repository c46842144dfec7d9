"""Prefix affinity in routing, on hand-built states: the strategy in decide() (prefix, round robin, least
loaded), the policy check's warnings, and the router indexing what it sends so that the next request with
that prefix follows it (forgotten when the engine restarts)."""
from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

import policies
from policies.checks import policy_warnings
from policies.compiled import compile_policy
from policies.decide import decide
from policies.facts import build_facts
from policies.live import InFlight
from policies.loader import load_policy, load_policy_file
from policies.router import PolicyRouter

from .support import NOW, compiled, engine, facts, live
from .test_prefix_affinity import SYSTEM, _body, _caching

POOL = """
backends:
  e1: {kind: engine, model: tiny-random}
  e2: {kind: engine, model: tiny-random}
  v1: {kind: openai, base_url: "http://v/v1", state: vllm}
  hosted: {kind: openai, base_url: "http://h/v1"}
models:
  pool:
    deployments:
      - {backend: e1, model: tiny-random}
      - {backend: e2, model: tiny-random}
      - {backend: v1, model: tiny-random}
      - {backend: hosted, model: gpt-4o-mini}
rules:
  - {name: pool, strategy: prefix_affinity, local: [e1, e2, v1], spill: [hosted], balance: BALANCE}
"""


# --- the strategy in decide() -------------------------------------------------------------------------

def _decide(balance: str = "prefix", match: dict | None = None, engines: dict | None = None,
            in_flight: dict | None = None, turn: int = 0) -> list[str]:
    policy = compiled(POOL.replace("BALANCE", balance))
    snaps = engines or {"e1": _caching(), "e2": _caching(), "v1": engine(max_num_seqs=8)}
    state = live(snaps, in_flight=in_flight, turn=turn)
    request = replace(facts(model="pool", blocks={b: 10 for b in snaps}), prefix_match=match or {})
    decision = decide(policy, request, state)
    assert decision.rule == "pool"
    return [t.backend for t in decision.targets]


def test_the_request_goes_to_the_engine_that_holds_its_prefix_then_spill_last() -> None:
    assert _decide(match={"e2": 0.95, "e1": 0.1}) == ["e2", "e1", "v1", "hosted"]


def test_a_busy_cached_engine_loses_the_request_to_an_idle_one() -> None:
    busy = {"e2": InFlight(num=5, num_started_since=5)}
    assert _decide(match={"e2": 0.95}, in_flight=busy)[:2] == ["e1", "v1"]


def test_an_engine_that_does_not_fit_is_not_chosen_for_its_cache() -> None:
    snaps = {"e1": _caching(), "e2": _caching(free=5), "v1": engine(max_num_seqs=8)}
    assert _decide(match={"e2": 0.95}, engines=snaps) == ["e1", "v1", "hosted"]


def test_the_vllm_member_scores_on_load_alone() -> None:
    snaps = {"e1": _caching(running=3), "e2": _caching(running=2), "v1": engine(max_num_seqs=8)}
    assert _decide(engines=snaps)[:3] == ["v1", "e2", "e1"]


@pytest.mark.parametrize(("turn", "first"), [(0, "e1"), (1, "e2"), (2, "v1"), (3, "e1")])
def test_round_robin_turns_over_the_pool(turn: int, first: str) -> None:
    assert _decide("round_robin", match={"e2": 0.95}, turn=turn)[0] == first


def test_least_loaded_ignores_the_cache() -> None:
    snaps = {"e1": _caching(), "e2": _caching(running=1), "v1": engine(running=1, max_num_seqs=8)}
    assert _decide("least_loaded", match={"e2": 0.95}, engines=snaps)[0] == "e1"


def test_unknown_balance_is_a_policy_error() -> None:
    with pytest.raises(Exception, match="balance"):
        compiled(POOL.replace("BALANCE", "random"))


def test_the_example_policy_sends_a_cached_prompt_to_its_engine_and_spills_hosted_last() -> None:
    loaded = load_policy_file(Path(policies.__file__).parent / "examples" / "prefix_affinity.yaml",
                              {"OPENAI_API_KEY": "sk-test"})
    policy = compile_policy(loaded.policy, {})
    snaps = {"gpu-a": _caching(), "gpu-b": _caching(), "vllm-1": engine(max_num_seqs=8)}
    state = live(snaps)
    request = replace(facts(model="llama", blocks={b: 10 for b in snaps}), prefix_match={"gpu-b": 0.9})
    decision = decide(policy, request, state)
    assert [t.backend for t in decision.targets] == ["gpu-b", "gpu-a", "vllm-1", "openai"]
    assert "prefix affinity: gpu-b hit 0.90 load 0 cost 10, gpu-a hit 0.00 load 0 cost 100" in decision.reason


def test_policy_check_warns_of_a_pool_with_nothing_to_choose_or_no_cache_to_see() -> None:
    one = POOL.replace("BALANCE", "prefix").replace("local: [e1, e2, v1]", "local: [e1]")
    only_vllm = POOL.replace("BALANCE", "prefix").replace("local: [e1, e2, v1]", "local: [v1]")
    fine = POOL.replace("BALANCE", "prefix")
    said = {name: [m for _, m in policy_warnings(compiled(text).policy, {})]
            for name, text in (("one", one), ("vllm", only_vllm), ("fine", fine))}
    assert any("nothing to choose" in m for m in said["one"]), said
    assert any("load-only" in m for m in said["vllm"]), said
    assert not any("prefix_affinity" in m or "load-only" in m for m in said["fine"]), said


# --- the router: index what is sent, follow it next time ----------------------------------------------

def test_router_sends_a_repeated_prefix_back_and_a_new_one_to_the_other_engine() -> None:
    text = POOL.replace("BALANCE", "prefix").replace("local: [e1, e2, v1]", "local: [e1, e2]")
    router = PolicyRouter(load_policy(textwrap.dedent(text), "p.yaml", {}), price_table={},
                          clock=lambda: NOW, wall_clock=lambda: 0.0)
    router.poller.snapshots = MappingProxyType({"e1": _caching(), "e2": _caching()})

    def send(system: str, question: str) -> str:
        body = _body(system, question)
        decision = router.decider.route(router.decider.build_facts(body, "default"))
        backend = decision.targets[0].backend
        router.live.release(router.live.reserve(backend, router.decider.build_facts(body, "default")))
        return backend

    first = send(SYSTEM, "Why was I charged twice?")
    assert [send(SYSTEM, f"Question {i}?") for i in range(3)] == [first] * 3
    other = send("You translate legal contracts into plain English. " * 40, "Clause 4?")
    assert other != first
    facts_now = router.decider.build_facts(_body(SYSTEM, "Again?"), "default")
    assert facts_now.prefix_match[first] > 0.8 and facts_now.prefix_match[other] == 0.0
    assert "prefix affinity:" in router.decider.route(facts_now).reason


def test_router_forgets_what_an_engine_cached_once_it_restarts() -> None:
    text = POOL.replace("BALANCE", "prefix").replace("local: [e1, e2, v1]", "local: [e1, e2]")
    router = PolicyRouter(load_policy(textwrap.dedent(text), "p.yaml", {}), price_table={},
                          clock=lambda: NOW, wall_clock=lambda: 0.0)
    running = replace(_caching(), prefix_queried_tokens=90_000)
    router.poller.snapshots = MappingProxyType({"e1": running, "e2": running})
    body = _body(SYSTEM, "Hello?")
    router.live.release(router.live.reserve("e2", router.decider.build_facts(body, "default")))
    assert router.decider.build_facts(body, "default").prefix_match["e2"] > 0.8
    router.poller.snapshots = MappingProxyType({"e1": running, "e2": replace(running, prefix_queried_tokens=0)})
    assert router.decider.build_facts(body, "default").prefix_match["e2"] == 0.0


def test_blocks_an_in_flight_request_holds_for_the_same_prefix_are_not_counted_twice() -> None:
    text = POOL.replace("BALANCE", "prefix").replace("local: [e1, e2, v1]", "local: [e1, e2]")
    router = PolicyRouter(load_policy(textwrap.dedent(text), "p.yaml", {}), price_table={},
                          clock=lambda: NOW, wall_clock=lambda: 0.0)
    tight = replace(_caching(free=60, total=60), max_num_seqs=64)  # room for two of these prompts, not three
    router.poller.snapshots = MappingProxyType({"e1": tight, "e2": tight})
    first = router.decider.build_facts(_body(SYSTEM, "One?"), "default")
    full = first.blocks_needed["e1"]
    holds = [router.live.reserve("e1", first)]
    second = router.decider.build_facts(_body(SYSTEM, "Two?"), "default")
    assert second.blocks_needed["e1"] < full // 3 and second.blocks_needed["e2"] == full
    holds.append(router.live.reserve("e1", second))
    third = router.decider.build_facts(_body(SYSTEM, "Three?"), "default")
    # e1 holds the prefix for both: the third fits there (counted in full, it would not: 2 × full > 60 − full).
    assert 2 * full > 60 - full and "e1: fits" in router.decider.route(third).reason
    for hold in holds:
        router.live.release(hold)
    router.live.release(holds[0])  # idempotent
    assert router.decider.build_facts(_body(SYSTEM, "Four?"), "default").blocks_needed["e1"] == full


def test_annotated_facts_are_the_plain_facts_with_the_prefix_fields_and_nothing_else() -> None:
    text = POOL.replace("BALANCE", "prefix")
    router = PolicyRouter(load_policy(textwrap.dedent(text), "p.yaml", {}), price_table={},
                          clock=lambda: NOW, wall_clock=lambda: 0.0)
    router.poller.snapshots = MappingProxyType({"e1": _caching(), "e2": _caching()})
    router.live.release(router.live.reserve("e1", router.decider.build_facts(_body(SYSTEM, "One?"), "default")))
    live, body = router.live.live_state(), _body(SYSTEM, "Two?")
    plain = build_facts(router.policy.current, body, "default", live, counter=router.decider.counter,
                        calibration=router.live.calibration)
    before = replace(plain)
    annotated = router.live.prefixes.annotate(plain, body, router.policy.current, live)
    assert annotated.prefix_match["e1"] > 0.5 and annotated.prefix_keys
    assert annotated == replace(plain, prefix_keys=annotated.prefix_keys, prefix_match=annotated.prefix_match,
                                blocks_needed=annotated.blocks_needed)
    assert plain == before and plain.prefix_keys == ()  # the facts it was given are left as they were
