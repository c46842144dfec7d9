"""After Redis restarts (its data kept in an append-only file), the limiter's pooled connections are
dead; the next command on each must still reach the new server, not fail open or lose what it carries
(here: the unspent leases returned on close)."""
from __future__ import annotations

import asyncio

from observability.limits import LimitsConfig, TeamLimits
from observability.limits_redis import RedisLimiter
from tests.support.redis_server import RedisServer

CLOCK = 1_795_000_030.0


def test_leases_go_back_after_a_redis_restart(durable_redis_server: RedisServer) -> None:
    config = LimitsConfig(teams={"alpha": TeamLimits(requests_per_minute=100_000)})

    async def run() -> float:
        limiter = RedisLimiter.from_url(durable_redis_server.url, config, clock=lambda: CLOCK)
        for i in range(5):  # the first leases 1,562 requests; the others spend from it
            await limiter.reserve(f"r{i}", "alpha", "k", 1, 0.0)
        durable_redis_server.restart()
        await limiter.aclose()  # returns the 1,557 it leased and did not spend
        reader = RedisLimiter.from_url(durable_redis_server.url, config, clock=lambda: CLOCK)
        (used,) = await reader.usage("alpha", "k")
        await reader.aclose()
        return used.used

    assert asyncio.run(run()) == 5  # before: the return met a dead connection and was lost (1,562)
