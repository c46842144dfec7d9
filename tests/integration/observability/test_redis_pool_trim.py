"""The limiter's one-server pool closes what a burst opened once traffic no longer needs it: a pile-up
(Redis down a moment, a host too busy to keep up) must not keep its connections open for good."""
from __future__ import annotations

import asyncio
import time

import redis

from observability.redis_clients import async_client
from tests.support.redis_server import RedisServer


def _connected(url: str) -> int:
    """Clients the server has, less the one asking."""
    checker = redis.Redis.from_url(url)
    try:
        return len(checker.client_list()) - 1
    finally:
        checker.close()


def test_a_bursts_connections_are_closed_under_light_traffic(redis_server: RedisServer) -> None:
    async def run() -> tuple[int, int]:
        client = async_client(redis_server.url, max_connections=64)
        await asyncio.gather(*(client.blpop(["nothing"], 0.3) for _ in range(40)))  # 40 held at once
        opened = await asyncio.to_thread(_connected, redis_server.url)
        deadline = time.monotonic() + 60.0  # a bound on waiting (the trim runs every 5 s), not a speed
        now = opened
        while now > 3 and time.monotonic() < deadline:
            for _ in range(10):  # a trickle, one command at a time
                await client.ping()
                await asyncio.sleep(0.05)
            now = await asyncio.to_thread(_connected, redis_server.url)
        await client.aclose()
        return opened, now

    opened, after = asyncio.run(run())
    assert opened >= 30  # (a slow host may hand one back before the last is sent)
    assert after <= 3  # one more than in use at once, or the pool's floor of 2 (before: 40 kept for good)


def test_a_bursts_connections_are_closed_when_traffic_stops(redis_server: RedisServer) -> None:
    """No command after the burst at all: a timer trims (the soak's idle end kept 34 of a burst's sockets)."""
    async def run() -> tuple[int, int]:
        client = async_client(redis_server.url, max_connections=64)
        await asyncio.sleep(5.2)  # past the first trim's time, so the burst's last release trims once
        await asyncio.gather(*(client.blpop(["nothing"], 0.3) for _ in range(40)))  # 40 held at once
        opened = await asyncio.to_thread(_connected, redis_server.url)
        deadline = time.monotonic() + 60.0  # a bound on waiting (the trim runs every 5 s), not a speed
        now = opened
        while now > 3 and time.monotonic() < deadline:
            await asyncio.sleep(1.0)  # nothing sent: only the pool's own timer can close them
            now = await asyncio.to_thread(_connected, redis_server.url)
        await client.aclose()
        return opened, now

    opened, after = asyncio.run(run())
    assert opened >= 30
    assert after <= 3  # the floor of 2 idle (+1 in use at the trim); before: the burst's kept until the next command
