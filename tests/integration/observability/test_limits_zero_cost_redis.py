"""The Redis limiter's script follows the same rule as the in-process one: a team over its USD
budget is still served at $0, a priced request is refused, the request limit still applies."""
from __future__ import annotations

import asyncio

from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_protocol import LimitExceeded
from observability.limits_redis import RedisLimiter
from tests.support.redis_server import RedisServer

NOW = 1_795_000_030.0


def test_zero_cost_passes_an_exhausted_budget_in_redis(redis_server: RedisServer) -> None:
    config = LimitsConfig(teams={"t": TeamLimits(usd_per_day=0.10, requests_per_minute=3)})

    async def run() -> list[str]:
        # lease_quota off: every reservation runs the Lua script, the path under test
        limiter = RedisLimiter.from_url(redis_server.url, config, clock=lambda: NOW, lease_quota=False)
        try:
            held = await limiter.reserve("r0", "t", "k", 10, 0.05)
            await limiter.settle(held, 10, 0.15)  # over the budget now
            outcomes = []
            for request_id, cost in (("r1", 0.0), ("r2", 0.01), ("r3", 0.0), ("r4", 0.0)):
                try:
                    await limiter.reserve(request_id, "t", "k", 10, cost)
                    outcomes.append("ok")
                except LimitExceeded as exc:
                    outcomes.append(exc.limit)
            return outcomes
        finally:
            await limiter.aclose()

    # r2 is refused by the budget before it is charged, so r3 is the third request of the minute
    assert asyncio.run(run()) == ["ok", "usd_per_day", "ok", "requests_per_minute"]
