"""A key's budget status (GET /admin/keys budget_status) read from the Redis limiter: what one replica
charged is what another reports as spent, with the key's own limit and a forecast; the team's windows
are not the key's."""
from __future__ import annotations

import asyncio
import time

import pytest

from gateway.key_usage import key_budget_status
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_redis import RedisLimiter
from tests.support.redis_server import RedisServer

KEY_LIMITS = TeamLimits(usd_per_day=2.0, usd_per_month=30.0)


def test_what_one_replica_charged_the_other_reports_as_the_keys_spend(redis_server: RedisServer) -> None:
    config = LimitsConfig(teams={"red": TeamLimits(usd_per_day=100.0)})

    async def run() -> dict[str, dict[str, float] | None]:
        first, other = RedisLimiter.from_url(redis_server.url, config), RedisLimiter.from_url(redis_server.url, config)
        try:
            for i in range(3):
                held = await first.reserve(f"r{i}", "red", "k1", 10, 0.1, key_limits=KEY_LIMITS)
                await first.settle(held, 10, 0.25)  # the actual cost replaces the estimate
            return key_budget_status(await other.usage("red", "k1", KEY_LIMITS), time.time())
        finally:
            await first.aclose()
            await other.aclose()

    day = int(time.time() // 86400)
    status = asyncio.run(run())
    if int(time.time() // 86400) != day:
        pytest.skip("the charges crossed a day boundary")
    assert status["day"] is not None and status["month"] is not None
    assert status["day"]["spent_usd"] == pytest.approx(0.75) and status["day"]["limit_usd"] == 2.0
    assert status["month"]["spent_usd"] == pytest.approx(0.75) and status["month"]["limit_usd"] == 30.0
    assert status["day"]["forecast_usd"] >= status["day"]["spent_usd"]
