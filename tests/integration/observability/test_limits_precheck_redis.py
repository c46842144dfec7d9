"""RedisLimiter.check_requests against a real redis-server: refuses once a requests-per-minute
window is full (also with leases in play), never charges, and fails open while Redis is down."""
from __future__ import annotations

import asyncio

import pytest

from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_protocol import LimitExceeded
from observability.limits_redis import RedisLimiter
from tests.support.redis_server import RedisServer

CLOCK = 1_795_000_030.0


@pytest.mark.parametrize("rpm", [10, 640])  # 10: checked exactly in Redis; 640: leases of 10 in play
def test_check_refuses_when_reserve_would(redis_server: RedisServer, rpm: int) -> None:
    config = LimitsConfig(teams={"alpha": TeamLimits(requests_per_minute=rpm)})

    async def run() -> int:
        limiter = RedisLimiter.from_url(redis_server.url, config, clock=lambda: CLOCK)
        admitted = 0
        try:
            while True:  # one client: the check must pass exactly while reserve would admit
                try:
                    await limiter.check_requests("alpha", "k")
                except LimitExceeded as refused:
                    assert refused.limit == "requests_per_minute"
                    break
                await limiter.check_requests("alpha", "k")  # a second look spends nothing
                await limiter.reserve(f"r{admitted}", "alpha", "k", 1, 0.0)
                admitted += 1
            with pytest.raises(LimitExceeded):
                await limiter.reserve("one-more", "alpha", "k", 1, 0.0)
        finally:
            await limiter.aclose()
        return admitted

    assert asyncio.run(run()) == rpm


def test_check_fails_open_while_redis_is_down(redis_server: RedisServer) -> None:
    config = LimitsConfig(teams={"alpha": TeamLimits(requests_per_minute=1)})

    async def run() -> None:
        limiter = RedisLimiter.from_url(redis_server.url, config, clock=lambda: CLOCK)
        await limiter.reserve("r", "alpha", "k", 1, 0.0)
        redis_server.kill()
        await limiter.check_requests("alpha", "k")  # cannot tell: reserve decides (and fails open)
        await limiter.aclose()

    asyncio.run(run())
