"""The limiter's connect gate: a server that answers is never gated; once it fails (an attempt failed,
a command timed out or was answered LOADING) one attempt at a time, the others refused at once, until
a command is answered again (a connect alone does not count: a loading server completes it)."""
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
        gate.leave(A, failed=False)
    assert gate.refused == 0


def test_after_a_failure_one_attempt_at_a_time_until_a_command_is_answered() -> None:
    gate = ConnectGate()
    gate.enter(A)
    gate.leave(A, failed=True)
    gate.enter(A)  # the probe
    with pytest.raises(RedisConnectionError):
        gate.enter(A)
    gate.enter(B)  # another server is not held up by this one
    gate.leave(B, failed=False)
    gate.leave(A, failed=False)  # connected: not enough, a loading server connects too
    gate.enter(A)
    with pytest.raises(RedisConnectionError):
        gate.enter(A)
    gate.leave(A, failed=False)
    gate.answered(A)  # a command answered: no gate any more
    gate.enter(A)
    gate.enter(A)
    assert gate.refused == 2


def test_a_timed_out_or_loading_command_gates_the_next_attempts() -> None:
    gate = ConnectGate()
    gate.failing(A)
    gate.enter(A)
    with pytest.raises(RedisConnectionError):
        gate.enter(A)
