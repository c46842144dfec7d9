"""The limiter's cluster client keeps no connection on its startup nodes: redis-py keeps the nodes it
was given (the URL's) as objects of their own, apart from the slot map's, and each one asked for the
slot map kept its connection for good — one more after every node restart that made it ask another
(the 15-minute cluster soak: the limiter's Redis connections 7 → 8 at its idle end)."""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from observability.redis_clients import async_client
from observability.redis_cluster_async import TRIM_INTERVAL_S
from tests.support.redis_server import RedisClusterServers, redis_server_path

NAME = "startup-nodes-test"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    servers = RedisClusterServers(tmp_path / "redis").start()
    yield servers
    servers.stop()


def _connections(cluster: RedisClusterServers) -> Counter[int]:
    """The client's connections on each node (by port), as the nodes list them."""
    out: Counter[int] = Counter()
    for node in cluster.nodes:
        asking = redis.Redis(port=node.port, client_name="asking")
        try:
            out[node.port] = sum(c.get("name") == NAME for c in asking.client_list())
        finally:
            asking.close()
    return out


async def _traffic(client: object, rounds: int) -> None:
    """A few commands to every node's slots, one at a time, for `rounds` trim periods."""
    for _ in range(rounds):
        for _ in range(5):
            await asyncio.gather(*(client.get(f"{{team-{t}}}:k") for t in range(6)),  # type: ignore[attr-defined]
                                 return_exceptions=True)
        await asyncio.sleep(TRIM_INTERVAL_S / 4)
        for t in range(6):
            await client.get(f"{{team-{t}}}:k")  # type: ignore[attr-defined]
        await asyncio.sleep(TRIM_INTERVAL_S)


def test_node_restarts_leave_no_connection_on_startup_nodes(cluster: RedisClusterServers) -> None:
    async def run() -> tuple[Counter[int], Counter[int]]:
        client = async_client(cluster.url, max_connections=64, client_name=NAME)
        try:
            await _traffic(client, 2)
            before = _connections(cluster)
            for node in cluster.nodes:  # each node restarted in turn: the slot map is read again, anywhere
                node.kill()
                await asyncio.gather(*(client.get(f"{{team-{t}}}:k") for t in range(6)), return_exceptions=True)
                node.start()
                cluster.wait_ok()
                await _traffic(client, 1)
            await _traffic(client, 2)
            return before, _connections(cluster)
        finally:
            await client.aclose()

    before, after = asyncio.run(run())
    assert after == before, f"the client's connections per node: {dict(before)} before the restarts, {dict(after)} after"
