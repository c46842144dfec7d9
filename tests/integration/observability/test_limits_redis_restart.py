"""After Redis restarts (its data kept in an append-only file), the limiter's pooled connections are
dead; the next command on each must still reach the new server, not fail open or lose what it carries
(here: the unspent leases returned on close), and no pooled connection may keep its dead socket."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from observability.limits_config import LimitsConfig, TeamLimits
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


def _dead_sockets_to(port: int) -> int:
    """This process's TCP connections to `port` that the peer has closed (CLOSE_WAIT): what a pool
    holding dead connections keeps open."""
    states: dict[int, str] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if int(cols[2].rsplit(":", 1)[1], 16) == port:
                states[int(cols[9])] = cols[3]
    dead = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the directory listing's own fd, closed by now
            continue
        dead += target.startswith("socket:[") and states.get(int(target[8:-1])) == "08"  # 08: CLOSE_WAIT
    return dead


def test_after_a_restart_every_pooled_connection_is_renewed(durable_redis_server: RedisServer) -> None:
    # the soak saw 22 fds held for good after a Redis restart: idle pooled connections below the
    # usual concurrency were never used again, so never renewed
    config = LimitsConfig(teams={"alpha": TeamLimits(requests_per_minute=10**9)})

    async def run() -> int:
        limiter = RedisLimiter.from_url(durable_redis_server.url, config, lease_quota=False)
        client = limiter._client  # a burst that holds 20 connections at once, as a busy gateway does
        await asyncio.gather(*(client.blpop(["nothing"], 0.3) for _ in range(20)))  # type: ignore[union-attr]
        durable_redis_server.restart()
        for i in range(40):  # then a trickle, one at a time
            await limiter.reserve(f"r{i}", "alpha", "k", 1, 0.0)
        dead = _dead_sockets_to(durable_redis_server.port)
        await limiter.aclose()
        return dead

    assert asyncio.run(run()) == 0
