"""REDIS_URL parsing for Redis Cluster, the per-team hash tag, and the cluster client's errors (no sockets)."""
from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import ConnectionError as RedisConnectionError

from observability import redis_cluster_async
from observability.redis_clients import _nodes, async_client, is_cluster, sync_client, team_tag
from observability.redis_cluster_async import shrink


def test_a_cluster_url_names_its_first_node_plainly_and_the_others_as_startup_nodes() -> None:
    assert is_cluster("redis+cluster://h1:7000") and is_cluster("REDISS+CLUSTER://h1:7000")
    assert not is_cluster("redis://h1:6379/0") and not is_cluster("unix:///tmp/redis.sock")
    assert _nodes("redis+cluster://u:p@h1:7000,h2:7001,h3/0") == ("redis://u:p@h1:7000/0", [("h2", 7001), ("h3", 6379)])
    assert _nodes("rediss+cluster://h1:7000") == ("rediss://h1:7000", [])


def test_a_plain_url_still_makes_the_one_server_client() -> None:
    client = sync_client("redis://127.0.0.1:1/0")  # no connection is made until a command runs
    assert type(client) is redis.Redis
    client.close()


def test_the_tag_holds_the_whole_team_name_whatever_it_contains() -> None:
    assert team_tag("red") == "{red}"
    # a brace in the name would end the tag early: two teams could then share a slot by accident,
    # or one team's keys fall into several
    assert team_tag("a}b{c") == "{a%7Db%7Bc}" and team_tag("a:b") == "{a%3Ab}"


def test_a_write_on_a_transport_closed_under_the_cluster_client_is_a_connection_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-py's own client stands in for a node's connection; ours is what is tested
    async def closed(self: object, *args: object, **kwargs: object) -> object:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")

    monkeypatch.setattr(aioredis.RedisCluster, "execute_command", closed)

    async def run() -> None:
        client = async_client("redis+cluster://127.0.0.1:1", max_connections=1)
        client._initialize = False  # as once started: no socket is opened here
        try:
            with pytest.raises(RedisConnectionError):  # what the limiter fails open on; a RuntimeError was a 500
                await client.execute_command("GET", "{t}:k")
        finally:
            await client.aclose()  # left open, its garbage collection logs "Unclosed RedisCluster client"

    asyncio.run(run())


def test_a_write_on_a_connection_dropped_under_the_command_is_no_answer_other_attribute_errors_are_bugs() -> None:
    async def write_on_dropped_connection() -> None:
        conn = aioredis.Connection(host="127.0.0.1", port=1)  # never connected: reader and writer are None
        await conn._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])  # redis-py's own write path

    with pytest.raises(AttributeError) as dropped:
        asyncio.run(write_on_dropped_connection())
    assert redis_cluster_async.closed_under_command(dropped.value)
    with pytest.raises(AttributeError) as ours:
        None.writelines([])  # type: ignore[attr-defined]  # the same message, raised outside redis-py
    assert not redis_cluster_async.closed_under_command(ours.value)
    assert not redis_cluster_async.closed_under_command(RuntimeError("a bug"))
    assert redis_cluster_async.closed_under_command(RuntimeError("unable to perform operation; the handler is closed"))


def test_a_nodes_pool_is_shrunk_to_what_it_needs_never_below_what_is_in_use() -> None:
    # a real redis-py node: connections are made (not connected) as concurrent commands would take them
    node = ClusterNode("127.0.0.1", 1, max_connections=64)
    taken = [node.acquire_connection() for _ in range(10)]
    for conn in taken[:8]:
        node.release(conn)  # 2 stay in use
    dropped = shrink(node, 4)
    assert len(dropped) == 6 and len(node._connections) == 4 and len(node._free) == 2
    assert not set(dropped) & set(node._connections)
    idle = set(node._free)
    assert set(shrink(node, 1)) == idle and len(node._connections) == 2  # the two in use are kept
    assert shrink(node, 0) == []


def test_past_its_commands_in_flight_a_command_waits_then_fails_as_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()

    async def slow(self: object, *args: object, **kwargs: object) -> object:
        await release.wait()
        return b"ok"

    monkeypatch.setattr(aioredis.RedisCluster, "execute_command", slow)  # redis-py's, under ours
    monkeypatch.setattr(redis_cluster_async, "GATE_TIMEOUT_S", 0.05)

    async def run() -> list[object]:
        client = async_client("redis+cluster://127.0.0.1:1", max_connections=2)
        client._initialize = False  # as once started: no socket is opened here
        first = [asyncio.create_task(client.execute_command("GET", f"{{t}}:{i}")) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(RedisConnectionError):  # the limiter fails open on it, as on the one-server pool
            await asyncio.wait_for(client.execute_command("GET", "{t}:third"), 30)  # unbounded, it would wait for `release`
        release.set()
        try:
            return list(await asyncio.gather(*first)) + [await client.execute_command("GET", "{t}:fourth")]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [b"ok"] * 3
