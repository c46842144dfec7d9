"""check_requests: the cheap requests-per-minute test made before a prompt is counted. It refuses
exactly when reserve would refuse on requests per minute, and charges nothing itself."""
from __future__ import annotations

import asyncio

import pytest

from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_inprocess import InProcessLimiter
from observability.limits_protocol import LimitExceeded

NOW = 1_795_000_030.0


def test_in_process_check_refuses_only_a_full_window_and_charges_nothing() -> None:
    config = LimitsConfig(teams={"a": TeamLimits(requests_per_minute=3, tokens_per_minute=10)},
                          keys={"k2": TeamLimits(requests_per_minute=1)})
    limiter = InProcessLimiter(config, clock=lambda: NOW)

    async def run() -> None:
        for i in range(3):
            for _ in range(5):  # checking many times spends nothing
                await limiter.check_requests("a", "k1")
            await limiter.reserve(f"r{i}", "a", "k1", 1, 0.0)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.check_requests("a", "k1")
        assert refused.value.limit == "requests_per_minute" and refused.value.retry_after_s >= 1
        await limiter.check_requests("b", "k1")  # another team: its own windows (none)
        # tokens are not its business: a team over its tokens/min passes the check (reserve refuses)
        other = InProcessLimiter(LimitsConfig(teams={"t": TeamLimits(tokens_per_minute=10)}), clock=lambda: NOW)
        await other.reserve("x", "t", "k", 10, 0.0)
        await other.check_requests("t", "k")

    asyncio.run(run())


def test_in_process_check_covers_the_key_limit() -> None:
    limiter = InProcessLimiter(LimitsConfig(keys={"k2": TeamLimits(requests_per_minute=1)}), clock=lambda: NOW)

    async def run() -> None:
        await limiter.reserve("r", "a", "k2", 1, 0.0)
        with pytest.raises(LimitExceeded):
            await limiter.check_requests("a", "k2")
        await limiter.check_requests("a", "k1")

    asyncio.run(run())
