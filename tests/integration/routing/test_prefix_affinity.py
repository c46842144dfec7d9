"""Prefix affinity end to end: two real `hybridgw engine --model tiny-random` processes behind one
gateway. Requests sharing a long system prompt land on the engine that cached it (its own state says
it served them from its prefix cache), a second hot prefix goes to the other engine, and a cached
engine with requests in flight hands the next one of its prefix to the idle engine. No timing: the
backend header, the engines' own prefix-cache counters and what is in flight decide every check."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.routing.conftest import Gateway, serving, wait_until
from tests.support import procs

BILLING = "You are the billing team's assistant. Answer in two sentences, cite the invoice number. " * 12
LEGAL = "You translate legal contracts into plain English for small shop owners, clause by clause. " * 12
HOLD = "You are a patient storyteller who never stops: continue the saga of the lighthouse keeper. " * 12


@dataclass
class Pool:
    gateway: Gateway
    engines: dict[str, str]  # backend name → http://127.0.0.1:P

    def state(self, backend: str) -> dict[str, Any]:
        return httpx.get(f"{self.engines[backend]}/v1/engine/state", timeout=10).json()

    def ask(self, system: str, question: str) -> str:
        return self.ask_usage(system, question)[0]

    def ask_usage(self, system: str, question: str) -> tuple[str, int]:
        """The backend that answered, and the prompt tokens it found cached (its usage says so)."""
        routed = self.gateway.chat("pool", max_tokens=2, messages=[
            {"role": "system", "content": system}, {"role": "user", "content": question}])
        assert routed.status == 200 and routed.rule == "affinity", routed
        assert routed.backend is not None
        return routed.backend, routed.body.usage.prompt_tokens_details.cached_tokens


def _policy(engines: dict[str, str]) -> str:
    backends = "\n".join(f"  {name}: {{kind: engine, model: tiny-random, base_url: \"{url}/v1\"}}"
                         for name, url in engines.items())
    deployments = "\n".join(f"      - {{backend: {name}, model: tiny-random}}" for name in engines)
    # load_tokens 170: HOLD's prompt (~240 tokens) cached is worth one request ahead on its engine, not two.
    return f"""
version: 1
backends:
{backends}
models:
  pool:
    deployments:
{deployments}
teams: {{red: {{}}}}
rules:
  - {{name: affinity, strategy: prefix_affinity, local: [{", ".join(engines)}], load_tokens: 170}}
"""


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with ExitStack() as stack:
        engines = {}
        for name in ("e1", "e2"):
            port = procs.free_port()
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(procs.running(
                procs.hybridgw("engine", "--model", "tiny-random", "--port", str(port)), f"{url}/health",
                name=f"engine-{name}", timeout_s=240))
            engines[name] = url
        gateway = stack.enter_context(serving(tmp_path_factory.mktemp("affinity"), _policy(engines)))
        yield Pool(gateway, engines)


def test_a_shared_system_prompt_stays_on_the_engine_that_cached_it_and_a_second_one_goes_to_the_other(
        pool: Pool) -> None:
    first, cold = pool.ask_usage(BILLING, "Why was I charged twice in May?")
    other = "e2" if first == "e1" else "e1"
    again = [pool.ask_usage(BILLING, f"What is invoice {i} for?") for i in range(3)]
    assert [backend for backend, _ in again] == [first] * 3
    # Each answer says it came from the prefix cache (OpenAI's usage.prompt_tokens_details.cached_tokens).
    assert cold == 0 and all(cached > 100 for _, cached in again), (cold, again)
    # The engine that took them served them from its prefix cache; the other never saw the prompt.
    cached = pool.state(first)
    assert cached["prefix_hit_tokens"] > 0.5 * cached["prefix_queried_tokens"], cached
    assert pool.state(other)["prefix_queried_tokens"] == 0

    # A second hot prefix finds nothing cached anywhere and goes to the engine whose cache is emptier.
    assert pool.ask(LEGAL, "What does clause 4 mean?") == other
    mixed = [(system, pool.ask(system, f"Follow-up {i}?")) for i in range(2) for system in (LEGAL, BILLING)]
    assert mixed == [(LEGAL, other), (BILLING, first)] * 2, mixed
    spread = pool.state(other)
    assert spread["prefix_hit_tokens"] > 0.5 * spread["prefix_queried_tokens"], spread


async def _open_stream(pool: Pool, client: Any, question: str) -> Any:
    return await client.chat.completions.with_raw_response.create(
        model="pool", stream=True, max_tokens=3000, extra_body={"ignore_eos": True},
        messages=[{"role": "system", "content": HOLD}, {"role": "user", "content": question}])


async def _hot_prefix_under_load(pool: Pool) -> list[str | None]:
    """Two long streams of one prefix held open on its engine, then a third request of that prefix."""
    async with pool.gateway.async_client() as client:
        held = []
        try:
            for i in range(2):  # one at a time: each decided with the one before it in flight
                held.append(await _open_stream(pool, client, f"Chapter {i}."))
            third = await _open_stream(pool, client, "Chapter 2.")
            held.append(third)
            return [raw.headers.get("x-hybridgw-backend") for raw in held]
        finally:
            for raw in held:
                await raw.parse().close()  # aborts the engine's sequences


def test_a_hot_prefix_spills_to_the_idle_engine_once_its_own_is_busy(pool: Pool) -> None:
    home = pool.ask(HOLD, "Once upon a time?")  # cached there, nothing in flight
    backends = asyncio.run(_hot_prefix_under_load(pool))
    # Two requests in flight on `home` (2 × 170 tokens) cost more than computing the whole prompt elsewhere.
    assert backends[:2] == [home, home], backends
    assert backends[2] not in (home, None), backends
    wait_until(lambda: all(pool.state(b)["num_running"] == 0 for b in pool.engines), "the streams' abort", 60)
