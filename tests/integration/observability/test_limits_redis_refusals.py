"""The Redis limiter against a real redis-server that answers with errors (OOM, READONLY after a
failover, NOSCRIPT): it fails open as documented (requests flow, a warning is logged), never raises."""
from __future__ import annotations

import asyncio

import pytest
import redis

from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_redis import RedisLimiter
from tests.support.redis_server import RedisServer, free_port

CONFIG = LimitsConfig(teams={"alpha": TeamLimits(requests_per_minute=1000, tokens_per_minute=10**6)})


async def _reserve_and_settle(url: str) -> tuple[int, int]:
    """(reservations granted, of them charged in Redis) for 5 requests; lease_quota off: every one asks Redis."""
    limiter = RedisLimiter.from_url(url, CONFIG, lease_quota=False)
    granted = charged = 0
    try:
        for i in range(5):
            reservation = await limiter.reserve(f"r{i}", "alpha", "key-1", 10, 0.0)
            granted += 1
            charged += bool(reservation.window_keys)
            await limiter.settle(reservation, 5, 0.0)
        await limiter.usage("alpha", "key-1")
    finally:
        await limiter.aclose()
    return granted, charged


@pytest.mark.parametrize("refusal", ["oom", "readonly", "noscript"])
def test_the_limiter_fails_open_when_redis_answers_with_an_error(redis_server: RedisServer, refusal: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    control = redis.Redis.from_url(redis_server.url)
    assert asyncio.run(_reserve_and_settle(redis_server.url)) == (5, 5)
    if refusal == "oom":
        control.config_set("maxmemory-policy", "noeviction")
        control.config_set("maxmemory", "1")
    elif refusal == "readonly":
        control.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    else:
        control.script_flush()
    granted, charged = asyncio.run(_reserve_and_settle(redis_server.url))
    assert granted == 5
    if refusal == "noscript":
        assert charged == 5  # redis-py loads the script again: still enforced
    else:
        assert charged == 0 and "limits not enforced" in caplog.text
    control.close()
