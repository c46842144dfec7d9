"""Prefix affinity without sockets: the prompt's chained keys, the per-engine index (LRU capped at the
engine's pool, forgotten on restart), the scorer's weighting, the strategy in decide() on hand-built
states, and the router indexing what it sends so that the next request with that prefix follows it."""
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
from policies.engine_state import parse_engine_state
from policies.facts import build_facts
from policies.live import InFlight
from policies.loader import load_policy, load_policy_file
from policies.prefix_affinity import PoolMember, by_affinity, least_loaded, requests_on, round_robin
from policies.prefix_index import (
    CHUNK_BYTES,
    PrefixIndex,
    capacity_chunks,
    prefix_keys,
    prompt_bytes,
    prompt_text,
)
from policies.router import PolicyRouter

from .support import NOW, compiled, engine, facts, live

SYSTEM = "You are a careful assistant for the billing team. " * 40  # ~2,000 bytes: 7 chunks


def _body(system: str, question: str) -> dict:
    return {"model": "pool", "max_tokens": 8,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}


def _caching(**kw) -> object:
    return replace(engine(max_num_seqs=8, **kw), prefix_caching=True)


# --- keys and text ---------------------------------------------------------------------------------

def test_prompts_sharing_a_prefix_share_their_leading_keys_and_no_more() -> None:
    a = prefix_keys(prompt_bytes(_body(SYSTEM, "What is my balance?" * 30)))
    b = prefix_keys(prompt_bytes(_body(SYSTEM, "Close my account now." * 30)))
    other = prefix_keys(prompt_bytes(_body(SYSTEM.upper(), "What is my balance?" * 30)))
    shared = len(SYSTEM) // CHUNK_BYTES
    assert len(a) > shared + 1 and a[:shared] == b[:shared]
    assert not set(a[shared + 1:]) & set(b)  # past the divergence no key is common
    assert not set(a) & set(other)  # a different system prompt: nothing in common
    # A key names its whole prefix: the same chunk text after a different start is another key.
    assert prefix_keys(b"x" * CHUNK_BYTES * 2)[1] != prefix_keys(b"y" * CHUNK_BYTES + b"x" * CHUNK_BYTES)[1]
    assert prefix_keys(b"short") == ()  # no full chunk, nothing to match


def test_prompt_text_follows_the_chat_layout_tools_first() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "bo"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}
    text = prompt_text(body)
    assert text.index('"name":"f"') < text.index("user\x1fbo\x1f")
    assert prompt_text({"prompt": "plain"}) == "plain"
    assert prompt_text({"messages": "not a list"}) == ""  # bad input is the gateway's 400, never a crash here


# --- the index ---------------------------------------------------------------------------------------

def test_index_matches_the_leading_run_and_evicts_tails_first_at_capacity() -> None:
    index = PrefixIndex()
    first = prefix_keys(b"a" * CHUNK_BYTES * 6)
    index.record("e1", first, capacity_chunks=100)
    assert index.match("e1", first) == 6 and index.match("e2", first) == 0
    assert index.match("e1", first[:3] + prefix_keys(b"b" * CHUNK_BYTES * 6)[3:]) == 3
    second = prefix_keys(b"c" * CHUNK_BYTES * 6)
    index.record("e1", second, capacity_chunks=8)  # the pool now holds 8 chunks: 4 of `first` go
    assert index.match("e1", second) == 6
    assert index.match("e1", first) == 2  # its head survives (engines free tail blocks first)
    assert index.occupancy("e1") == 1.0 and index.size("e1") == 8


def test_index_follows_the_engine_restart_and_ignores_engines_without_prefix_caching() -> None:
    index = PrefixIndex()
    keys = prefix_keys(b"a" * CHUNK_BYTES * 4)
    snap = replace(_caching(), prefix_queried_tokens=5000)
    assert index.sync("e1", snap)
    index.record("e1", keys, 100)
    assert index.sync("e1", replace(snap, prefix_queried_tokens=7000)) and index.match("e1", keys) == 4
    assert index.sync("e1", replace(snap, prefix_queried_tokens=30))  # the counter went back: restarted
    assert index.match("e1", keys) == 0
    assert not index.sync("vllm", engine())  # vLLM does not say it caches prefixes: load-only
    assert not index.sync("e1", None)  # unknown state: no match counts


def test_capacity_is_the_engines_pool_in_chunks_of_text() -> None:
    # 100 blocks × 16 tokens × 4 bytes per token = 6,400 bytes = 25 chunks of 256.
    assert capacity_chunks(engine(total=100, block_size=16), bytes_per_token=4.0) == 25


# --- the scorer ---------------------------------------------------------------------------------------

def test_the_cached_engine_wins_until_it_is_busier_than_the_saving_is_worth() -> None:
    cached, idle = PoolMember("e1", hit=0.9, load=0, prompt_tokens=1000), PoolMember("e2", 0.0, 0, 1000)
    assert [m.backend for m in by_affinity([idle, cached])] == ["e1", "e2"]
    busy = replace(cached, load=3)  # 100 + 3 × 256 = 868 < 1,000 to compute on the idle one
    assert by_affinity([idle, busy])[0].backend == "e1"
    busier = replace(cached, load=4)  # 100 + 1,024 > 1,000: the hot prefix spills over to the idle engine
    assert by_affinity([idle, busier])[0].backend == "e2"
    assert by_affinity([idle, busier], load_tokens=0)[0].backend == "e1"  # load ignored


def test_a_short_prompt_follows_load_a_long_one_its_cache() -> None:
    short = [PoolMember("e1", hit=0.9, load=1, prompt_tokens=200), PoolMember("e2", 0.0, 0, 200)]
    assert by_affinity(short)[0].backend == "e2"  # 20 + 256 > 200: recomputing is cheaper than waiting
    long = [replace(m, prompt_tokens=3000) for m in short]
    assert by_affinity(long)[0].backend == "e1"  # 300 + 256 < 3,000


def test_a_new_prefix_goes_to_the_emptier_cache_then_the_rules_order() -> None:
    full = PoolMember("e1", 0.0, 0, prompt_tokens=500, occupancy=0.5)
    empty = PoolMember("e2", 0.0, 0, prompt_tokens=500, occupancy=0.1)
    assert [m.backend for m in by_affinity([full, empty])] == ["e2", "e1"]
    assert [m.backend for m in by_affinity([replace(full, occupancy=0.1), empty])] == ["e1", "e2"]


def test_comparison_orders_least_loaded_and_round_robin() -> None:
    members = [PoolMember("e1", 0.9, 2), PoolMember("e2", 0.0, 1), PoolMember("e3", 0.0, 1)]
    assert [m.backend for m in least_loaded(members)] == ["e2", "e3", "e1"]
    assert [[m.backend for m in round_robin(members, t)][0] for t in range(4)] == ["e1", "e2", "e3", "e1"]


def test_requests_on_an_engine_count_what_this_gateway_sent_since_the_poll() -> None:
    snap = replace(_caching(running=1, waiting=0), max_num_seqs=8)
    state = live({"e1": snap}, in_flight={"e1": InFlight(num=3, num_started_since=3, num_ended_since=1)})
    assert requests_on(state, "e1") == 3  # 1 polled + 3 started − 1 ended
    assert requests_on(state, "nowhere") == 0


# --- the strategy in decide() -------------------------------------------------------------------------

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


# --- the router: index what is sent, follow it next time -----------------------------------------------

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


def test_engine_state_says_whether_it_caches_prefixes_and_its_lookup_counter() -> None:
    snap = parse_engine_state({"num_blocks_total": 10, "prefix_caching": True, "prefix_queried_tokens": 640}, 1.0)
    assert snap is not None and snap.prefix_caching and snap.prefix_queried_tokens == 640
    older = parse_engine_state({"num_blocks_total": 10}, 1.0)  # an engine from before these fields
    assert older is not None and not older.prefix_caching


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


def test_policy_check_warns_of_a_pool_with_nothing_to_choose_or_no_cache_to_see() -> None:
    one = POOL.replace("BALANCE", "prefix").replace("local: [e1, e2, v1]", "local: [e1]")
    only_vllm = POOL.replace("BALANCE", "prefix").replace("local: [e1, e2, v1]", "local: [v1]")
    fine = POOL.replace("BALANCE", "prefix")
    said = {name: [m for _, m in policy_warnings(compiled(text).policy, {})]
            for name, text in (("one", one), ("vllm", only_vllm), ("fine", fine))}
    assert any("nothing to choose" in m for m in said["one"]), said
    assert any("load-only" in m for m in said["vllm"]), said
    assert not any("prefix_affinity" in m or "load-only" in m for m in said["fine"]), said


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


def test_each_key_is_the_sha256_of_the_whole_prefix_up_to_its_chunk() -> None:
    import hashlib

    from policies.prefix_index import _ROOT

    data = prompt_bytes(_body(SYSTEM, "What is my balance?" * 30))
    keys = prefix_keys(data)
    assert len(keys) == len(data) // CHUNK_BYTES
    for i, key in enumerate(keys):  # the running hash read chunk by chunk names what a one-shot hash names
        assert key == hashlib.sha256(_ROOT + data[:(i + 1) * CHUNK_BYTES]).digest()[:16]


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
