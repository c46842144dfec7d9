"""The limiter's connect gate: a server that answers is never gated; after a failed attempt (or a
command that timed out) one attempt at a time, the others refused at once, until one succeeds."""
from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from observability.redis_connect_gate import ConnectGate

A, B = ("127.0.0.1", 6379), ("127.0.0.1", 6380)


def test_a_server_that_answers_takes_any_number_of_attempts_at_once() -> None:
    gate = ConnectGate()
    for _ in range(10):
        gate.enter(A)
    for _ in range(10):
        gate.leave(A, ok=True)
    assert gate.refused == 0


def test_after_a_failure_one_attempt_at_a_time_until_one_succeeds() -> None:
    gate = ConnectGate()
    gate.enter(A)
    gate.leave(A, ok=False)
    gate.enter(A)  # the probe
    with pytest.raises(RedisConnectionError):
        gate.enter(A)
    gate.enter(B)  # another server is not held up by this one
    gate.leave(B, ok=True)
    gate.leave(A, ok=True)  # the probe connected: no gate any more
    gate.enter(A)
    gate.enter(A)
    assert gate.refused == 1


def test_a_timed_out_command_gates_the_next_attempts_and_a_cancelled_one_tells_nothing() -> None:
    gate = ConnectGate()
    gate.timed_out(A)
    gate.enter(A)
    gate.leave(A, ok=None)  # cancelled: still failed, but nothing in flight now
    gate.enter(A)
    with pytest.raises(RedisConnectionError):
        gate.enter(A)
