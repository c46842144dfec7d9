"""Prefix affinity without sockets, the parts free of a router: the prompt's chained keys, the per-engine
index (LRU capped at the engine's pool, forgotten on restart) and the scorer's weighting. The strategy in
decide() and the router's indexing are in test_prefix_affinity_routing.py."""
from __future__ import annotations

from dataclasses import replace

from policies.engine_state import parse_engine_state
from policies.live import InFlight
from policies.prefix_affinity import PoolMember, by_affinity, least_loaded, requests_on, round_robin
from policies.prefix_index import (
    CHUNK_BYTES,
    PrefixIndex,
    capacity_chunks,
    prefix_keys,
    prompt_bytes,
    prompt_text,
)

from .support import engine, live

SYSTEM = "You are a careful assistant for the billing team. " * 40  # ~2,000 bytes: 7 chunks


def _body(system: str, question: str) -> dict:
    return {"model": "pool", "max_tokens": 8,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}


def _caching(**kw) -> object:
    return replace(engine(max_num_seqs=8, **kw), prefix_caching=True)


# --- keys and text ------------------------------------------------------------------------------------

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


def test_each_key_is_the_sha256_of_the_whole_prefix_up_to_its_chunk() -> None:
    import hashlib

    from policies.prefix_index import _ROOT

    data = prompt_bytes(_body(SYSTEM, "What is my balance?" * 30))
    keys = prefix_keys(data)
    assert len(keys) == len(data) // CHUNK_BYTES
    for i, key in enumerate(keys):  # the running hash read chunk by chunk names what a one-shot hash names
        assert key == hashlib.sha256(_ROOT + data[:(i + 1) * CHUNK_BYTES]).digest()[:16]


# --- the index ----------------------------------------------------------------------------------------

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


def test_engine_state_says_whether_it_caches_prefixes_and_its_lookup_counter() -> None:
    snap = parse_engine_state({"num_blocks_total": 10, "prefix_caching": True, "prefix_queried_tokens": 640}, 1.0)
    assert snap is not None and snap.prefix_caching and snap.prefix_queried_tokens == 640
    older = parse_engine_state({"num_blocks_total": 10}, 1.0)  # an engine from before these fields
    assert older is not None and not older.prefix_caching


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
