"""An engine whose server refuses connections is down (skipped like an open circuit, not tried as
"unknown"), and a request no engine could ever hold is refused as too large (400), not "retry later"."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from types import MappingProxyType

import httpx
import pytest

from policies.decide import decide
from policies.engine_poller import EngineStatePoller, StateSource, state_sources

from .support import NOW, compiled, engine, facts, live, local_and_openai

POLICY = local_and_openai() + """\
  local-only:
    deployments: [{backend: local, model: smollm2}]
rules:
  - name: fit
    strategy: kv_fit
    local: [local]
    spill: [openai]
"""
SLO = """
backends:
  local: {kind: engine, model: smollm2}
models:
  chat: {deployments: [{backend: local, model: smollm2}]}
slos:
  fast: {ttft_p95_s: 1.0}
rules:
  - {name: cheap, strategy: cheapest_within_slo, candidates: [local], slo: fast}
"""


def _backends(decision) -> list[str]:
    return [t.backend for t in decision.targets]


def _down(engines=None) -> object:
    return replace(live(engines or {}), unreachable=frozenset({"local"}))


def test_unreachable_engine_spills_at_once_and_is_not_a_last_resort() -> None:
    decision = decide(compiled(POLICY), facts(blocks={"local": 13}), _down({"local": engine()}))
    assert _backends(decision) == ["openai"]
    assert "local: unreachable" in decision.reason


@pytest.mark.parametrize("model", ["local-only", "chat"])
def test_unreachable_engine_with_nowhere_else_is_503_with_retry_after(model: str) -> None:
    text = POLICY if model == "local-only" else POLICY.replace("spill: [openai]", "spill: []")
    decision = decide(compiled(text), facts(model=model), _down())
    assert decision.targets == () and decision.refusal == "no_healthy_backend"
    assert decision.retry_after_s >= 1.0
    assert "unreachable" in decision.reason


def test_a_poll_that_answers_again_brings_the_engine_back() -> None:
    state = live({"local": engine()})
    assert _backends(decide(compiled(POLICY), facts(model="local-only", blocks={"local": 13}), state)) == ["local"]


@pytest.mark.parametrize(("snap", "why"), [
    (engine(free=1000, total=1000, max_model_len=150), "local: 200 tokens exceed its context of 150"),
    (engine(free=10, total=10), "local: needs 13 KV blocks, its whole pool has 10"),
])
def test_request_larger_than_the_engine_spills_or_is_too_large(snap, why) -> None:
    policy = compiled(POLICY)
    spilled = decide(policy, facts(blocks={"local": 13}), live({"local": snap}))
    assert _backends(spilled) == ["openai"] and why in spilled.reason
    refused = decide(policy, facts(model="local-only", blocks={"local": 13}), live({"local": snap}))
    assert refused.targets == () and refused.refusal == "too_large" and why in refused.reason


def test_full_but_big_enough_engine_is_still_retry_later() -> None:
    decision = decide(compiled(POLICY), facts(model="local-only", blocks={"local": 13}),
                      live({"local": engine(free=5, total=100)}))
    assert decision.refusal == "no_capacity" and decision.retry_after_s >= 1.0


def test_cheapest_within_slo_refuses_too_large_too() -> None:
    decision = decide(compiled(SLO), facts(blocks={"local": 13}), live({"local": engine(free=10, total=10)}))
    assert decision.targets == () and decision.refusal == "too_large"


def _poller(source: StateSource, handler) -> EngineStatePoller:
    poller = EngineStatePoller([source])
    poller._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    poller.snapshots = MappingProxyType({"local": engine(age=0.0)})
    return poller


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"model": "m", "num_blocks_total": 8, "num_blocks_free": 8, "block_size": 16})


def test_poller_marks_a_refusing_engine_down_and_clears_it_when_it_answers() -> None:
    [source] = state_sources(compiled(POLICY).policy, {"local": "http://127.0.0.1:9/v1"})
    assert source.on_server

    async def run() -> None:
        poller = _poller(source, _refuse)
        await poller.poll_once()
        assert poller.unreachable == {"local"} and "local" not in poller.snapshots
        poller._client = httpx.AsyncClient(transport=httpx.MockTransport(_answer))
        await poller.poll_once()
        assert poller.unreachable == frozenset() and poller.snapshots["local"].num_blocks_total == 8

    asyncio.run(run())


def test_a_separate_state_url_that_refuses_is_only_unknown() -> None:
    text = POLICY.replace("local: {kind: engine, model: smollm2}",
                          "local: {kind: engine, model: smollm2, state_url: 'http://sidecar:9/state'}")
    [source] = state_sources(compiled(text).policy, {"local": "http://127.0.0.1:9/v1"})
    assert not source.on_server

    async def run() -> None:
        poller = _poller(source, _refuse)
        await poller.poll_once()
        assert poller.unreachable == frozenset() and "local" in poller.snapshots  # kept; ages into unknown

    asyncio.run(run())


def test_router_live_state_carries_the_unreachable_set() -> None:
    state = replace(live(), unreachable=frozenset({"local"}))
    view = state.health_of("local")
    assert view.state == "open" and view.unreachable and view.retry_at == NOW
    assert state.health_of("openai").state == "closed"
