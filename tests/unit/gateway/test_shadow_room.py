"""A shadow call to a local engine weighs the engine as a client request's kv_fit does: the KV blocks
this gateway's holds leave free, the queue, the circuit, an unknown state; a hosted one always may go.
A PolicyRouter without sockets (its poller's snapshots set by hand)."""
from __future__ import annotations

import textwrap
from dataclasses import replace
from types import MappingProxyType

from gateway.shadow_room import no_room, shadow_facts
from policies.loader import load_policy
from policies.router import PolicyRouter
from tests.support.clock import ManualClock
from tests.unit.policies.support import NOW, engine

POLICY = """
backends:
  local: {kind: engine, model: smollm2, base_url: "http://127.0.0.1:9/v1", max_waiting: 2}
  openai: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  chat:
    deployments:
      - {backend: openai, model: gpt-4o-mini}
      - {backend: local, model: smollm2}
  hosted_only: {deployments: [{backend: openai, model: gpt-4o-mini}]}
fairness: {enabled: false}
teams:
  red: {shadow: {share: 1.0, backends: [openai, local], models: {local: smollm2}}}
"""
BODY = {"model": "chat", "max_tokens": 147, "messages": [{"role": "user", "content": "tiktoken is great!"}]}


def _router(free: int = 100, total: int = 100, waiting: int = 0) -> PolicyRouter:
    router = PolicyRouter(load_policy(textwrap.dedent(POLICY), "p.yaml", {}), price_table={},
                          clock=ManualClock(NOW), wall_clock=lambda: 0.0)
    snap = engine(free=free, total=total, waiting=waiting, max_num_seqs=64)
    router.poller.snapshots = MappingProxyType({"local": snap})
    return router


def _poll(router: PolicyRouter, running: int) -> None:
    """A new poll of the engine, taken now (the holds taken so far started before it)."""
    snap = router.poller.snapshots["local"]
    router.poller.snapshots = MappingProxyType({"local": replace(snap, taken_at=NOW, num_running=running)})


def _why(router: PolicyRouter, body: dict = BODY) -> str | None:
    facts = router.decider.build_facts(body, "red")
    state = router.live.live_state()
    return no_room(router.policy.current, shadow_facts(facts, "local", state), state, "local")


def test_a_shadow_call_fits_while_the_blocks_are_free_and_not_once_holds_take_them() -> None:
    router = _router()
    facts = router.decider.build_facts(BODY, "red")
    assert facts.blocks_needed == {"local": 10}  # (13 + 147) / 16
    assert _why(router) is None
    holds = [router.live.reserve("local", facts) for _ in range(9)]  # 90 of 100 held: 10 left
    # Sent since the poll, they count as the engine's queue until a poll shows them (policies/live.py)...
    assert _why(router) == "local: queue 9 > 2"
    # ...a poll taken now shows them running (their blocks not yet allocated): the 10 blocks left fit exactly.
    _poll(router, running=9)
    assert _why(router) is None
    holds.append(router.live.reserve("local", facts))
    assert _why(router) == "local: needs 10 KV blocks, 0 free"
    router.live.release(holds.pop())
    assert _why(router) is None


def test_a_full_queue_an_open_circuit_or_an_unknown_state_leave_no_room() -> None:
    assert _why(_router(waiting=3)) == "local: queue 3 > 2"
    assert "whole pool" in (_why(_router(total=5, free=5)) or "")
    router = _router()
    router.live.health.record("local", False, None, NOW)  # failure_threshold 5 by default: still closed
    assert _why(router) is None
    for _ in range(10):
        router.live.health.record("local", False, None, NOW)
    assert _why(router) == "local: circuit open"
    stale = _router()
    stale.poller.snapshots = MappingProxyType({})
    assert _why(stale) == "local: state unknown"


def test_hosted_backends_always_have_room_and_an_alias_without_the_engine_is_counted_from_its_snapshot() -> None:
    router = _router(free=0)
    facts = router.decider.build_facts(BODY, "red")
    state = router.live.live_state()
    assert no_room(router.policy.current, facts, state, "openai") is None
    hosted = router.decider.build_facts({**BODY, "model": "hosted_only"}, "red")
    assert "local" not in hosted.blocks_needed  # no deployment there: build_facts did not count it
    assert shadow_facts(hosted, "local", state).blocks_needed == {"local": 10}
    assert _why(router, {**BODY, "model": "hosted_only"}) == "local: needs 10 KV blocks, 0 free"
