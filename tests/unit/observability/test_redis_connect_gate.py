"""The connect gate: never for a server that answered lately; after a failure one attempt at a time, the
others refused; for one not heard from lately one attempt at a time, the others waiting for its first answer."""
from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from observability.redis_connect_gate import ConnectGate

A, B = ("127.0.0.1", 6379), ("127.0.0.1", 6380)


async def _entered(gate: ConnectGate, server: tuple[str, int]) -> asyncio.Task[None]:
    """An attempt that may have to wait: started, and run as far as it goes without the others."""
    task = asyncio.create_task(gate.enter(server))
    await asyncio.sleep(0)
    return task


def test_a_server_that_answered_lately_takes_any_number_of_attempts_at_once() -> None:
    async def run() -> None:
        gate = ConnectGate()
        gate.answered(A)
        for _ in range(10):
            await gate.enter(A)
        for _ in range(10):
            gate.settle(A, failing=False)
        assert gate.refused == gate.waited == 0

    asyncio.run(run())


def test_after_a_failure_one_attempt_at_a_time_until_a_command_is_answered() -> None:
    async def run() -> None:
        gate = ConnectGate()
        await gate.enter(A)
        gate.settle(A, failing=True)
        await gate.enter(A)  # the probe
        with pytest.raises(RedisConnectionError):
            await gate.enter(A)
        gate.answered(B)
        await gate.enter(B)  # another server is not held up by this one
        gate.settle(B, failing=None)
        gate.settle(A, failing=None)  # connected, closed before any answer: still failing
        await gate.enter(A)
        with pytest.raises(RedisConnectionError):
            await gate.enter(A)
        gate.settle(A, failing=False)  # a command answered: no gate any more
        await gate.enter(A)
        await gate.enter(A)
        assert gate.refused == 2

    asyncio.run(run())


def test_a_timed_out_or_loading_command_gates_the_next_attempts() -> None:
    async def run() -> None:
        gate = ConnectGate()
        gate.answered(A)
        gate.failing(A)
        await gate.enter(A)
        with pytest.raises(RedisConnectionError):
            await gate.enter(A)

    asyncio.run(run())


def test_a_server_not_heard_from_lately_lets_the_others_wait_for_the_first_answer() -> None:
    async def run() -> None:
        gate = ConnectGate()  # never answered: a new pool, or a server back from an outage
        await gate.enter(A)
        waiting = [await _entered(gate, A) for _ in range(5)]
        assert not any(task.done() for task in waiting) and gate.waited == 5
        gate.settle(A, failing=False)  # the first one's command answered: all go at once
        await asyncio.gather(*waiting)
        assert gate.refused == 0

    asyncio.run(run())


def test_a_loading_answer_to_the_first_attempt_refuses_those_waiting() -> None:
    async def run() -> None:
        gate = ConnectGate()
        await gate.enter(A)
        waiting = [await _entered(gate, A) for _ in range(5)]
        gate.settle(A, failing=True)  # LOADING, or no answer in time
        results = await asyncio.gather(*waiting, return_exceptions=True)
        # one goes on as the next attempt; the others fail (the limiter fails open) without a socket
        assert sum(isinstance(r, RedisConnectionError) for r in results) == 4
        assert gate.refused == 4

    asyncio.run(run())


def test_a_wait_with_no_answer_ends_in_a_refusal_and_a_vanished_attempt_hands_on() -> None:
    async def run() -> None:
        gate = ConnectGate(wait_s=0.05)
        await gate.enter(A)
        with pytest.raises(RedisConnectionError):
            await gate.enter(A)
        waiting = [await _entered(gate, A) for _ in range(3)]
        gate.settle(A, failing=None)  # the attempt went away (cancelled, closed): the next one tries
        await asyncio.sleep(0)
        assert sum(task.done() for task in waiting) == 1
        gate.settle(A, failing=False)
        await asyncio.gather(*waiting)

    asyncio.run(run())
