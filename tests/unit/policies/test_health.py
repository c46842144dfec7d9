"""Circuit breaker transitions and TTFT statistics (time is passed in: no sleeping)."""
from __future__ import annotations

import pytest

from policies.health import CircuitBreaker, HealthBook, TtftStats
from policies.schema import Health

SETTINGS = Health(failure_threshold=3, cooldown_s=5.0, max_cooldown_s=15.0, probe_timeout_s=10.0)


def test_opens_after_consecutive_failures_only() -> None:
    b = CircuitBreaker(SETTINGS)
    b.record(False, 0.0)
    b.record(False, 0.0)
    b.record(True, 0.0)  # a success resets the count
    b.record(False, 1.0)
    b.record(False, 1.0)
    assert b.state_at(1.0) == "closed"
    b.record(False, 1.0)
    assert b.state_at(1.0) == "open" and b.reopen_at() == 6.0


def test_cooldown_half_open_probe_and_recovery() -> None:
    b = CircuitBreaker(SETTINGS)
    for _ in range(3):
        b.record(False, 0.0)
    assert b.state_at(4.9) == "open"
    assert not b.claim_probe(4.9)
    assert b.state_at(5.0) == "half_open"
    assert b.claim_probe(5.0)
    assert b.state_at(5.1) == "open"  # one probe at a time
    assert not b.claim_probe(5.1)
    b.record(True, 6.0)
    assert b.state_at(6.0) == "closed" and b.consecutive_failures == 0


def test_failed_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    b = CircuitBreaker(SETTINGS)
    for _ in range(3):
        b.record(False, 0.0)
    now = 5.0
    for expected in (10.0, 15.0, 15.0):  # 5 → 10 → 15 (cap) → 15
        assert b.claim_probe(now)
        b.record(False, now)
        assert b.reopen_at() - now == expected
        now += expected
    b.claim_probe(now)
    b.record(True, now)
    for _ in range(3):
        b.record(False, now)
    assert b.reopen_at() - now == 5.0  # back to the first cooldown after recovering


def test_a_probe_that_never_reports_frees_up() -> None:
    b = CircuitBreaker(SETTINGS)
    for _ in range(3):
        b.record(False, 0.0)
    assert b.claim_probe(5.0)
    assert b.state_at(14.9) == "open"
    assert b.state_at(15.0) == "half_open"


def test_a_probe_given_back_is_there_for_the_next_call() -> None:
    book = HealthBook(["b"], SETTINGS)
    for _ in range(3):
        book.record("b", False, None, 0.0)
    assert book.claim_probe("b", 5.0) and book.view(5.1)["b"].state == "open"
    book.release_probe("b")  # the call that claimed it was not made
    assert book.view(5.1)["b"].state == "half_open" and book.claim_probe("b", 5.1)
    book.record("b", False, None, 5.2)  # a failed probe still backs off as before
    assert book.view(5.3)["b"].state == "open" and book.breakers["b"].cooldown_s == 10.0
    book.release_probe("unknown")  # a backend the policy no longer names: nothing to do
    closed = CircuitBreaker(SETTINGS)
    closed.release_probe()
    assert closed.state_at(0.0) == "closed"


def test_ttft_stats() -> None:
    stats = TtftStats(alpha=0.5, window=20)
    assert stats.ewma_s is None and stats.p95_s is None
    stats.record(1.0)
    stats.record(2.0)
    assert stats.ewma_s == pytest.approx(1.5)
    for i in range(20):
        stats.record(float(i))
    assert stats.p95_s == 19.0  # the window holds 0..19


def test_health_book_view_follows_time_and_results() -> None:
    book = HealthBook(["a", "b"], SETTINGS)
    assert book.view(0.0)["a"].state == "closed"
    for _ in range(3):
        book.record("a", False, None, 0.0)
    assert book.view(1.0)["a"].state == "open"
    assert book.view(5.0)["a"].state == "half_open"  # the cached view expires with the cooldown
    assert book.claim_probe("a", 5.0)
    assert book.view(5.0)["a"].state == "open"
    book.record("a", True, 0.25, 6.0)
    view = book.view(6.0)["a"]
    assert view.state == "closed" and view.ttft_ewma_s == 0.25
    book.record("unknown-backend", False, None, 0.0)  # ignored


def test_health_survives_a_reload_for_backends_that_stay() -> None:
    old = HealthBook(["a", "b"], SETTINGS)
    for _ in range(3):
        old.record("a", False, None, 0.0)
    new = HealthBook(["a", "c"], SETTINGS)
    new.carry_over(old)
    assert new.view(1.0)["a"].state == "open" and set(new.view(1.0)) == {"a", "c"}
