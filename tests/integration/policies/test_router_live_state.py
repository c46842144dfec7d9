"""PolicyRouter with its real poller against real HTTP servers: `hybridgw engine` (tiny random
model, CPU) and a small state server for a third-party engine (ours and vLLM's formats)."""
from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Callable

import openai

from policies.decision import Target
from policies.loader import load_policy
from policies.router import PolicyRouter
from tests.support import procs

from .state_server import StateServer, serving

POLICY = """
backends:
  local: {{kind: {kind}, base_url: "{url}/v1"{extra}}}
  openai: {{kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  chat:
    deployments:
      - {{backend: local, model: {model}}}
      - {{backend: openai, model: gpt-4o-mini}}
health: {{poll_interval_s: 0.05, stale_after_s: 0.5}}
rules:
  - name: fit
    strategy: kv_fit
    local: [local]
    spill: [openai]
"""


def _router(url: str, kind: str = "engine", model: str = "tiny-random", extra: str = "") -> PolicyRouter:
    text = textwrap.dedent(POLICY.format(kind=kind, url=url, model=model, extra=extra))
    return PolicyRouter(load_policy(text, "p.yaml", {}), price_table={})


async def _until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Wait for a condition (a bound on waiting, not a speed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


def _body(max_tokens: int) -> dict[str, object]:
    return {"model": "chat", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hello there, how are you?"}]}


def _route(router: PolicyRouter, max_tokens: int = 8) -> list[str]:
    return [t.backend for t in router.decider.route(router.decider.build_facts(_body(max_tokens), "default")).targets]


def test_router_follows_a_real_engine() -> None:
    port = procs.free_port()
    cmd = procs.python_module("gateway.cli", "engine", "--model", "tiny-random", "--port", str(port),
                              "--kv-cache-bytes", "2000000")
    url = f"http://127.0.0.1:{port}"
    with procs.running(cmd, f"{url}/health", name="policy-engine", timeout_s=180) as proc:
        asyncio.run(_with_engine(url, proc))


async def _with_engine(url: str, proc: procs.Proc) -> None:
    router = _router(url)
    await router.start()
    try:
        await _until(lambda: router.live.live_state().engine("local") is not None, "first engine state")
        snap = router.live.live_state().engine("local")
        assert snap is not None and snap.model == "tiny-random" and snap.kv_bytes_per_token > 0
        total = snap.num_blocks_total
        assert _route(router) == ["local", "openai"]
        # A request whose KV cannot fit in the whole pool spills, with the reason.
        big = router.decider.route(router.decider.build_facts(_body(total * snap.block_size), "default"))
        assert [t.backend for t in big.targets] == ["openai"] and "KV blocks" in big.reason
        # In-flight holds fill the pool: the next request spills until they are released.
        facts = router.decider.build_facts(_body(snap.block_size * total // 2), "default")
        holds = [router.live.reserve("local", facts) for _ in range(2)]
        assert _route(router) == ["openai"]
        for hold in holds:
            router.live.release(hold)
        assert _route(router) == ["local", "openai"]
        await _calibrates_from_the_engine(router, url)
        # The engine goes away: its server refuses the polls → down → spill only. The blocking wait for
        # its exit runs off the loop, so the poller keeps polling meanwhile (on the loop it froze the
        # poller past the stale window, and the state read "stale", never "unreachable").
        await asyncio.to_thread(procs.stop, proc)
        await _until(lambda: "local" in router.poller.unreachable, "the refused polls")
        await _until(lambda: router.live.live_state().engine("local") is None, "engine state dropped")
        decision = router.decider.route(router.decider.build_facts(_body(8), "default"))
        assert [t.backend for t in decision.targets] == ["openai"]
        assert "local: unreachable" in decision.reason
        assert "local" in router.poller.errors
    finally:
        await router.stop()


async def _calibrates_from_the_engine(router: PolicyRouter, url: str) -> None:
    """The engine's own prompt count (its tokenizer + chat template) teaches the router its ratio."""
    body = _body(4)
    facts = router.decider.build_facts(body, "default")
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    reply = await client.chat.completions.create(model="tiny-random", messages=body["messages"], max_tokens=4)  # type: ignore[arg-type]
    await client.close()
    assert reply.usage is not None and reply.usage.prompt_tokens != facts.prompt_tokens
    router.live.record_usage(facts, Target("local", "tiny-random"), reply.usage.prompt_tokens, reply.usage.completion_tokens)
    again = router.decider.build_facts(body, "default")
    assert abs(again.prompt_tokens_by_backend["local"] - reply.usage.prompt_tokens) <= 1
    assert again.prompt_tokens_by_backend["openai"] == facts.prompt_tokens


def test_hybridgw_state_format_unhealthy_and_failing_server() -> None:
    asyncio.run(_hybridgw_format())


async def _hybridgw_format() -> None:
    server = StateServer(state={"model": "remote", "kv_bytes_per_token": 1024, "block_size": 16,
                                "num_blocks_total": 100, "num_blocks_free": 100, "num_running": 0,
                                "num_waiting": 0, "healthy": True})
    async with serving(server):
        router = _router(server.url, kind="openai", model="remote", extra=", state: hybridgw")
        await router.start()
        try:
            await _until(lambda: router.live.live_state().engine("local") is not None, "first state")
            assert _route(router) == ["local", "openai"]
            server.state["num_waiting"] = 9  # a long queue: spill
            await _until(lambda: _route(router) == ["openai"], "queue seen")
            server.state.update(num_waiting=0, healthy=False)  # says it is unhealthy: unknown at once
            await _until(lambda: router.live.live_state().engines.get("local") is None, "unhealthy dropped")
            server.state["healthy"] = True
            await _until(lambda: _route(router) == ["local", "openai"], "recovered")
            server.status = 500  # polls fail: the last good state ages into unknown
            await _until(lambda: router.live.live_state().engine("local") is None, "stale after failures")
            assert router.live.live_state().engines.get("local") is not None  # kept, but too old to trust
            assert _route(router) == ["openai", "local"]
        finally:
            await router.stop()


def test_vllm_metrics_format() -> None:
    asyncio.run(_vllm_format())


async def _vllm_format() -> None:
    server = StateServer()
    async with serving(server):
        router = _router(server.url, kind="openai", model="m", extra=", state: vllm, kv_bytes_per_token: 2048")
        await router.start()
        try:
            await _until(lambda: router.live.live_state().engine("local") is not None, "first metrics")
            snap = router.live.live_state().engine("local")
            assert snap is not None and (snap.num_blocks_total, snap.num_blocks_free) == (1000, 1000)
            facts = router.decider.build_facts(_body(8), "default")
            assert facts.kv_bytes["local"] == (facts.prompt_tokens + 8) * 2048
            assert _route(router) == ["local", "openai"]
            server.vllm["usage"] = 0.9995  # KV nearly full: 0 blocks free
            await _until(lambda: _route(router) == ["openai"], "full KV seen")
            server.vllm.update(usage=0.1, waiting=12)
            await _until(lambda: "queue 12 > 4" in router.decider.route(router.decider.build_facts(_body(8), "default")).reason,
                         "queue depth seen")
        finally:
            await router.stop()
