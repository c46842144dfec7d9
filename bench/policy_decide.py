"""Benchmark: what routing adds per request — counting a 1,000-token prompt, building the facts and
deciding — on the default policy (hybrid: local engine + OpenAI), on slo_cost (with the TTFT
prediction), on prefix_affinity (the prompt's prefix keys, an engine pool) and on a 6-rule policy, in steady
state (tiktoken's first call is slow and happens at start-up). Each call gets a prompt it has not seen
(its end differs), built just before the call, so no cache answers for the count; two rows repeat a
1,000-token system prompt before a new question (the count cache's case, and prefix affinity's). Peer, same run:
litellm.token_counter.

    .venv/bin/python bench/policy_decide.py [--iterations 3000] [--rounds 1] [--no-peer]
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from observability.bench.metrics import percentile
from policies.offline import configure_offline_env

SENTENCE = "The gateway counts tokens before the call and routes each request to where it fits best. "


def _body(target_tokens: int = 1000) -> dict[str, Any]:
    from policies.tokens import TokenCounter

    counter = TokenCounter()
    text = ""
    while counter.count_messages([{"role": "user", "content": text}], "o200k_base") < target_tokens:
        text += SENTENCE
    return {"model": "smollm2", "max_tokens": 256, "stream": True,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": text}]}


def _fresh(body: dict[str, Any], **changes: Any) -> Iterator[dict[str, Any]]:
    """`body` (with `changes`) again and again, its last message ending differently each time and made
    just before the call, as a parsed request's would be (in the CPU's caches, its hash not yet taken)."""
    system, user = body["messages"]
    for i in itertools.count():
        yield {**body, **changes, "messages": [system, {**user, "content": f"{user['content']}Question {i}?"}]}


def _shared_system(body: dict[str, Any], model: str) -> Iterator[dict[str, Any]]:
    """The 1,000-token text as the system prompt of every request, each with a new short question. Each
    gets its own copy of the text, as a parsed request body would (a str caches its hash)."""
    text = body["messages"][1]["content"]
    for i in itertools.count():
        system = {"role": "system", "content": text[:-1] + text[-1]}  # equal, not the same object
        yield {**body, "model": model, "messages": [system, {"role": "user", "content": f"Question {i}?"}]}


def _time(fn: Callable[[], object], iterations: int) -> tuple[float, float]:
    for _ in range(min(200, iterations)):  # warm caches and encodings
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return percentile(samples, 50) / 1000, percentile(samples, 99) / 1000


def _router(path: Path | None) -> Any:
    from policies.live import EngineSnapshot
    from policies.loader import load_default_policy, load_policy_file
    from policies.router import PolicyRouter

    env = {"OPENAI_API_KEY": "sk-bench", "ANTHROPIC_API_KEY": "sk-bench"}
    loaded = load_default_policy(env) if path is None else load_policy_file(path, env)
    # A still clock keeps the snapshot below fresh, as the poller keeps it (no sockets here).
    router = PolicyRouter(loaded, clock=lambda: 0.0)
    snap = EngineSnapshot(taken_at=0.0, model="smollm2", kv_bytes_per_token=23040, block_size=16,
                          num_blocks_total=4096, num_blocks_free=1500, num_running=8, num_waiting=1,
                          prefill_tokens_per_s=1800.0, decode_tokens_per_s=240.0, max_model_len=8192)
    router.poller.snapshots = MappingProxyType({"local": snap, "night-pool": snap})
    return router


def _gateway_path(router: Any, bodies: Iterator[dict[str, Any]]) -> Callable[[], object]:
    """What gateway/route_plan.py does per request: one live view for the facts and the decision."""
    def run() -> object:
        live = router.live.live_state()
        return router.decider.route(router.decider.build_facts(next(bodies), "default", live=live), live=live)

    return run


def _counted_path(router: Any, body: dict[str, Any]) -> Callable[[], object]:
    """_gateway_path with the prompt already counted (as a large one is, off the event loop): the
    Python that routing adds on top of tiktoken."""
    tokens = router.decider.build_facts(body, "default").prompt_tokens

    def run() -> object:
        live = router.live.live_state()
        facts = router.decider.build_facts(body, "default", live=live, prompt_tokens=tokens)
        return router.decider.route(facts, live=live)

    return run


def _rows(body: dict[str, Any], examples: Path, include_peer: bool) -> list[tuple[str, Callable[[], object]]]:
    """(name, one call) per measured row; routers built once, outside the timing."""
    default = _router(None)
    facts = default.decider.build_facts(body, "default")
    print(f"prompt: {facts.prompt_tokens} tokens ({facts.encoding}); default policy ({default.policy.current.rules[0].spec.strategy}) "
          f"decides {[t.backend for t in default.decider.route(facts).targets]}")
    chat = {**body, "model": "chat"}
    slo = _router(examples / "cheapest_within_slo.yaml")
    slo_cost = _router(examples / "slo_cost.yaml")
    chat_facts = slo_cost.decider.build_facts(chat, "default")
    seasonal = _router(examples / "seasonal_time_windows.yaml")
    batch = {**body, "model": "batch"}
    counted = _fresh(body)
    rows: list[tuple[str, Callable[[], object]]] = [
        ("count tokens (tiktoken, chat format)",
         lambda: default.decider.counter.count_prompt(next(counted), facts.encoding)),
        ("route() only (live state + decide), default policy", lambda: default.decider.route(facts)),
        ("route() only, slo_cost (2 candidates)", lambda: slo_cost.decider.route(chat_facts)),
        ("count + facts + decide, default policy", _gateway_path(default, _fresh(body))),
        ("  facts + decide only (prompt counted), default policy", _counted_path(default, body)),
        ("count + facts + decide, cheapest_within_slo (3 targets)", _gateway_path(slo, _fresh(body, model="chat"))),
        ("count + facts + predict + decide, slo_cost (2 targets)", _gateway_path(slo_cost, _fresh(chat))),
        ("  facts + predict + decide only (prompt counted), slo_cost", _counted_path(slo_cost, chat)),
        ("  slo_cost, 1,000-token system prompt seen before", _gateway_path(slo_cost, _shared_system(body, "chat"))),
        ("count + facts + decide, seasonal (time windows, 3 rules)", _gateway_path(seasonal, _fresh(batch))),
    ]
    pool = _router(examples / "prefix_affinity.yaml")  # 3 engines, gpu-a holding this prompt's prefix
    snap = replace(default.poller.snapshots["local"], prefix_caching=True, max_num_seqs=64)
    pool.poller.snapshots = MappingProxyType({n: snap for n in ("gpu-a", "gpu-b", "vllm-1")})
    llama = {**body, "model": "llama"}
    shared = _shared_system(body, "llama")
    for held in (llama, next(shared)):
        pool.live.release(pool.live.reserve("gpu-a", pool.decider.build_facts(held, "default")))
    rows.append(("count + facts + prefix keys + decide, prefix_affinity (3)", _gateway_path(pool, _fresh(llama))))
    rows.append(("  prefix_affinity, 1,000-token system prompt seen before", _gateway_path(pool, shared)))
    if include_peer:
        import litellm  # the peer: what LiteLLM's proxy uses to count prompt tokens

        peer = _fresh(body)
        rows.append(("peer: litellm.token_counter (count only)",
                     lambda: litellm.token_counter(model="gpt-4o-mini", messages=next(peer)["messages"])))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=3000, help="per row and round")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rows interleaved round by round (a shared machine's load moves); the median p50")
    parser.add_argument("--no-peer", action="store_true", help="skip litellm.token_counter")
    parser.add_argument("--default-heap", action="store_true",
                        help="leave the GC as Python starts it (default: as `hybridgw serve` sets it up, gateway/heap.py)")
    args = parser.parse_args(argv)
    configure_offline_env()
    rows = _rows(_body(), Path(__file__).resolve().parent.parent / "policies" / "examples", not args.no_peer)
    if not args.default_heap:  # what serve does once start-up is done: the start-up heap frozen
        from gateway.heap import prepare_heap_for_serving

        prepare_heap_for_serving()
    p50s: dict[str, list[float]] = {name: [] for name, _ in rows}
    p99s: dict[str, list[float]] = {name: [] for name, _ in rows}
    for _ in range(args.rounds):
        for name, fn in rows:
            p50, p99 = _time(fn, args.iterations)
            p50s[name].append(p50)
            p99s[name].append(p99)
    print(f"\n{'step':<58} {'p50 µs':>8} {'p99 µs':>8}" + ("   (median of the rounds' p50, p99)" if args.rounds > 1 else ""))
    for name, _ in rows:
        print(f"{name:<58} {statistics.median(p50s[name]):>8.1f} {statistics.median(p99s[name]):>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
