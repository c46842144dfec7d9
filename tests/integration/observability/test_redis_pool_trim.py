"""The pools (the limiter's asyncio one; the ledger's and the key store's blocking ones, on one server and
on each node of a cluster) close what a burst opened once traffic no longer needs it: a pile-up (Redis
down a moment, a host too busy to keep up, threads asking at once) must not keep its connections open for good."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from observability.redis_clients import async_client, sync_client
from tests.support.redis_server import RedisClusterServers, RedisServer, redis_server_path


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


def _named(url: str, name: str) -> int:
    checker = redis.Redis.from_url(url)
    try:
        return sum(1 for c in checker.client_list() if c.get("name") == name)
    finally:
        checker.close()


def _idle_until_trimmed(url: str, name: str) -> int:
    """Send nothing (only the pool's own timer can close connections) until at most 2 named clients are left,
    or 60 s — a bound on waiting (the trim runs every 5 s), not a speed; the count then."""
    deadline = time.monotonic() + 60.0
    now = _named(url, name)
    while now > 2 and time.monotonic() < deadline:
        time.sleep(1.0)
        now = _named(url, name)
    return now


def _burst(client: Any, threads: int) -> None:
    """`threads` threads each holding a connection at once (all started, then a BLPOP that times out after 1 s)."""
    ready = threading.Barrier(threads)

    def hold(_: int) -> None:
        ready.wait(30.0)
        client.blpop(["nothing"], 1.0)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(hold, range(threads)))


def test_the_blocking_clients_close_a_bursts_connections_when_traffic_stops(redis_server: RedisServer) -> None:
    """The ledger's and the key store's clients (threads): the soak's idle end kept 2 more Redis sockets
    than after warm-up; redis-py's own pool never closes a connection."""
    client = sync_client(redis_server.url, client_name="hybridgw-trim-test", socket_timeout=2.0)
    try:
        _burst(client, 20)
        opened = _named(redis_server.url, "hybridgw-trim-test")
        now = _idle_until_trimmed(redis_server.url, "hybridgw-trim-test")
        client.ping()  # still serves after its trims
    finally:
        client.close()
    assert opened >= 15  # named as asked: CLIENT LIST tells which part of a gateway holds what
    assert now <= 2  # the floor of 2 idle (before: the burst's 20 kept for good)
    assert _named(redis_server.url, "hybridgw-trim-test") == 0  # closing the client closed its pool


def test_the_blocking_clients_close_a_bursts_connections_under_light_traffic(redis_server: RedisServer) -> None:
    client = sync_client(redis_server.url, client_name="hybridgw-trim-test", socket_timeout=2.0)
    try:
        _burst(client, 20)
        opened = now = _named(redis_server.url, "hybridgw-trim-test")
        deadline = time.monotonic() + 60.0
        while now > 2 and time.monotonic() < deadline:
            for _ in range(10):  # a trickle from one thread
                client.ping()
                time.sleep(0.05)
            now = _named(redis_server.url, "hybridgw-trim-test")
    finally:
        client.close()
    assert opened >= 15
    assert now <= 2  # one more than in use at once (1), or the floor of 2


@pytest.fixture
def cluster(tmp_path: Any) -> Any:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    servers = RedisClusterServers(tmp_path / "redis", durable=False).start()
    try:
        yield servers
    finally:
        servers.stop()


def test_the_blocking_cluster_clients_close_a_bursts_connections_when_traffic_stops(cluster: RedisClusterServers) -> None:
    """On a cluster the ledger's and key store's client is redis.RedisCluster: one pool per node, which
    redis-py never trims (a burst of threads on one node's keys kept its 20 sockets for good)."""
    node = cluster.nodes[min(key_slot(b"nothing") * 3 // 16384, 2)]  # the master of the key's slot (redis-cli's split)
    client = sync_client(cluster.url, client_name="hybridgw-ctrim-test", socket_timeout=2.0)
    try:
        _burst(client, 20)
        opened = _named(node.url, "hybridgw-ctrim-test")
        now = _idle_until_trimmed(node.url, "hybridgw-ctrim-test")
        client.ping()  # still serves after its trims
    finally:
        client.close()
    assert opened >= 15
    assert now <= 2  # the floor of 2 idle (before: the burst's 20 kept for good)
    assert sum(_named(n.url, "hybridgw-ctrim-test") for n in cluster.nodes) == 0  # closing closed every node's pool
