"""Limits: window math, which limit refuses, settle deltas, and the in-process limiter's exactness."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from observability.limits import plan_charges, settle_deltas, window
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_inprocess import InProcessLimiter
from observability.limits_protocol import LimitExceeded, Reservation

NOW = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC).timestamp()


class FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_windows_are_utc_aligned_including_the_year_end() -> None:
    assert window("requests_per_minute", NOW) == (int(NOW - 30), NOW + 30)
    assert window("usd_per_day", NOW)[1] == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    start, end = window("usd_per_month", NOW)
    assert start == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert end == datetime(2027, 1, 1, tzinfo=UTC).timestamp()


def test_plan_covers_team_and_key_limits_in_exact_units() -> None:
    config = LimitsConfig(teams={"a": TeamLimits(tokens_per_minute=1000, usd_per_day=2.5)},
                          keys={"k1": TeamLimits(requests_per_minute=3)})
    charges = plan_charges(config, "a", "k1", 120, 0.0123, NOW)
    assert [(c.scope, c.limit_name, c.amount, c.limit) for c in charges] == [
        ("team", "tokens_per_minute", 120, 1000),
        ("team", "usd_per_day", 12_300_000, 2_500_000_000),
        ("key", "requests_per_minute", 1, 3),
    ]
    assert plan_charges(config, "b", "k2", 120, 1.0, NOW) == []  # no limits: nothing to charge


def test_settle_deltas_replace_the_estimate_with_actuals() -> None:
    config = LimitsConfig(teams={"a": TeamLimits(requests_per_minute=9, tokens_per_minute=1000, usd_per_month=5)})
    keys = tuple(c.key for c in plan_charges(config, "a", "k", 100, 0.01, NOW))
    reservation = Reservation("r", "a", "k", 100, 0.01, keys)
    deltas = dict(settle_deltas(reservation, 130, 0.004))
    assert sorted(deltas.values()) == [-6_000_000, 30]  # requests are not re-counted
    assert settle_deltas(reservation, 100, 0.01) == []


def test_refusal_names_the_limit_and_when_to_retry() -> None:
    limiter = InProcessLimiter(LimitsConfig(teams={"a": TeamLimits(tokens_per_minute=250)}), clock=FixedClock(NOW))

    async def run() -> LimitExceeded:
        await limiter.reserve("r1", "a", "k", 200, 0.0)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.reserve("r2", "a", "k", 100, 0.0)
        return refused.value

    error = asyncio.run(run())
    assert error.limit == "tokens_per_minute"
    assert "tokens/min" in error.message and "200 of 250" in error.message
    assert error.retry_after_s == pytest.approx(30.0)


def test_concurrent_reserves_never_overshoot() -> None:
    clock = FixedClock(NOW)
    limiter = InProcessLimiter(LimitsConfig(teams={"a": TeamLimits(requests_per_minute=37, tokens_per_minute=10_000)}),
                               clock=clock)

    async def one(i: int) -> bool:
        try:
            reservation = await limiter.reserve(f"r{i}", "a", "k", 100, 0.0)
        except LimitExceeded:
            return False
        await asyncio.sleep(0)
        await limiter.settle(reservation, 100, 0.0)
        return True

    async def run() -> list[bool]:
        return await asyncio.gather(*(one(i) for i in range(200)))

    assert sum(asyncio.run(run())) == 37
    clock.now += 60  # the next minute has room again
    assert sum(asyncio.run(run())) == 37


def test_settling_below_the_estimate_frees_room() -> None:
    limiter = InProcessLimiter(LimitsConfig(teams={"a": TeamLimits(tokens_per_minute=1000)}), clock=FixedClock(NOW))

    async def run() -> None:
        held = await limiter.reserve("r1", "a", "k", 900, 0.0)
        with pytest.raises(LimitExceeded):
            await limiter.reserve("r2", "a", "k", 500, 0.0)
        await limiter.settle(held, 300, 0.0)  # the answer was shorter than estimated
        await limiter.reserve("r3", "a", "k", 500, 0.0)
        usage = {u.limit_name: u.used for u in await limiter.usage("a", "k")}
        assert usage == {"tokens_per_minute": 800}

    asyncio.run(run())


def test_usd_budget_per_key() -> None:
    config = LimitsConfig(keys={"k1": TeamLimits(usd_per_day=0.05)})
    limiter = InProcessLimiter(config, clock=FixedClock(NOW))

    async def run() -> int:
        accepted = 0
        for i in range(10):
            try:
                await limiter.reserve(f"r{i}", "a", "k1", 10, 0.01)
                accepted += 1
            except LimitExceeded as exc:
                assert exc.limit == "usd_per_day" and "key 'k1'" in exc.message
        await limiter.reserve("other-key", "a", "k2", 10, 1.0)  # other keys are not limited
        return accepted

    assert asyncio.run(run()) == 5
