"""Two `hybridgw serve` replicas on a real three-node Redis Cluster (REDIS_URL=redis+cluster://…):
keys made in the cluster work on both, a rate limit is exact across them, every request leaves one
usage record, each team's keys sit in one slot while the teams spread over the nodes, and a node
killed and restarted under traffic loses nothing (limits fail open meanwhile, records are replayed)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis

from gateway.key_store import KeyStoreUnavailable
from gateway.key_store_redis import RedisKeyStore
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_redis import RedisLimiter
from observability.redis_store import RedisStore
from observability.stores import StoreUnavailable
from tests.integration.observability.replica import replica_record
from tests.support import procs
from tests.support.clock import minute_with_room
from tests.support.policy_text import fake_backend
from tests.support.redis_server import RedisClusterServers, redis_server_path

RPM = 23
TEAMS = ("rpm", "spread-a", "spread-b", "spread-c", "spread-d", "restart")


@dataclass
class Stack:
    cluster: RedisClusterServers
    gateways: list[str]  # base URLs
    keys: dict[str, str]  # team -> API key (made in the cluster's key store)
    procs: list[procs.Proc]


def _policy(fake: str) -> str:
    teams = "\n".join(f"  {t}: {{limits: {{requests_per_minute: {RPM if t == 'rpm' else 100000}}}}}" for t in TEAMS)
    return "\nversion: 1\nbackends:\n" + fake_backend("hosted", fake, (1, 2)) + f"""\
models:
  m: {{deployments: [{{backend: hosted, model: m}}]}}
teams:
{teams}
rules:
  - name: hosted
    route: [hosted]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    root = tmp_path_factory.mktemp("cluster")
    cluster = RedisClusterServers(root / "redis").start()
    fake_port = procs.free_port()
    fake = procs.start(procs.python_module("tests.fakes.openai_upstream", "--port", str(fake_port)),
                       name="cluster-fake", unset=procs.FOREIGN_ENV)
    (root / "policy.yaml").write_text(_policy(f"http://127.0.0.1:{fake_port}"))
    store = RedisKeyStore.from_url(cluster.url)
    keys = {team: store.create(team, "cluster-test")[0] for team in TEAMS}
    store.close()
    gateways: list[procs.Served] = []
    try:
        procs.wait_http(f"http://127.0.0.1:{fake_port}/health", fake)
        for name in ("a", "b"):  # both start at once, then are waited for
            gateways.append(procs.start_gateway(root / "policy.yaml", name=f"cluster-gw-{name}",
                                                data_dir=root / name, redis_url=cluster.url,
                                                unset=procs.FOREIGN_ENV))
        yield Stack(cluster, [gw.ready().url for gw in gateways], keys, [gw.proc for gw in gateways])
        for gw in gateways:
            assert gw.proc.alive(), gw.log()[-3000:]
            assert "Traceback" not in gw.log(), gw.log()[-5000:]
    finally:
        for proc in [fake, *(gw.proc for gw in gateways)]:
            procs.stop(proc)
        cluster.stop()


async def _chat(client: httpx.AsyncClient, url: str, key: str, stream: bool = False) -> tuple[int, str]:
    response = await client.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                 json={"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                       "max_tokens": 4, "stream": stream})
    return response.status_code, response.headers["x-hybridgw-request-id"]


async def _burst(stack: Stack, team: str, count: int, stream: bool = False) -> list[tuple[int, str]]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        return list(await asyncio.gather(*(_chat(client, stack.gateways[i % 2], stack.keys[team], stream)
                                           for i in range(count))))


def _record_ids(stack: Stack, team: str) -> list[str]:
    store = RedisStore.from_url(stack.cluster.url)
    try:
        return [r.request_id for r in store.records(team, 0, time.time() + 60)]
    finally:
        store.close()


def _wait_records(stack: Stack, team: str, ids: set[str]) -> list[str]:
    return procs.wait_until(lambda: (found := _record_ids(stack, team)) and set(found) >= ids and found,
                            f"{len(ids)} usage records of {team!r}", 60)


def test_a_rate_limit_is_exact_across_two_replicas_and_every_request_is_recorded(stack: Stack) -> None:
    minute = minute_with_room(8.0)  # the burst must sit in one minute window (0.9 s at a load of 10)
    results = asyncio.run(_burst(stack, "rpm", RPM + 17))
    assert time.time() // 60 == minute, "the burst crossed a minute boundary"
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) == RPM and statuses.count(429) == 17, statuses
    ids = {request_id for _, request_id in results}
    found = _wait_records(stack, "rpm", ids)
    assert sorted(found) == sorted(ids)  # every request, refused ones too, exactly once


def _keys_by_node(stack: Stack) -> dict[int, list[bytes]]:
    out = {}
    for node in stack.cluster.nodes:
        client = redis.Redis(port=node.port)
        out[node.port] = [k for k in client.scan_iter("hgw:*", count=1000)]
        client.close()
    return out


def test_each_teams_keys_share_a_slot_and_teams_spread_over_the_nodes(stack: Stack) -> None:
    for team in TEAMS[1:5]:
        results = asyncio.run(_burst(stack, team, 4, stream=True))
        assert [s for s, _ in results] == [200] * 4
        _wait_records(stack, team, {i for _, i in results})
    by_node = _keys_by_node(stack)
    client = redis.Redis(port=stack.cluster.nodes[0].port)
    slots: dict[bytes, set[int]] = {}
    for keys in by_node.values():
        for key in keys:
            if b"{" in key:
                tag = key[key.index(b"{") + 1:key.index(b"}")]
                slots.setdefault(tag, set()).add(int(client.execute_command("CLUSTER", "KEYSLOT", key)))
    client.close()
    assert {t.encode() for t in TEAMS[1:5]} <= set(slots) and b"keys" in slots
    assert all(len(s) == 1 for s in slots.values()), slots  # one slot per team (and one for the key store)
    assert sum(1 for keys in by_node.values() if keys) >= 2, by_node  # and the teams are not all on one node


def test_nothing_is_lost_when_a_node_restarts_under_traffic(stack: Stack) -> None:
    node = stack.cluster.node_of("hgw:{restart}:records")
    asyncio.run(_burst(stack, "restart", 2))  # the replicas know the key before its node may go down

    async def traffic() -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        async with httpx.AsyncClient(timeout=30.0) as client:
            for i in range(60):
                if i == 20:
                    node.kill()  # SIGKILL; its append-only file has every acknowledged write
                if i == 40:  # the node stays down until a replica's ledger has felt it (its writer flushes
                    # on its own clock: 20 fast requests can fit between two flushes), then comes back
                    await asyncio.to_thread(procs.wait_until, lambda: any("spilling to disk" in p.output()
                                                                          for p in stack.procs),
                                            "a replica spilling its records while the node is down", 60)
                    await asyncio.to_thread(node.start)
                out.append(await _chat(client, stack.gateways[i % 2], stack.keys["restart"], stream=bool(i % 3)))
        return out

    results = asyncio.run(traffic())
    assert [s for s, _ in results] == [200] * 60  # limits fail open while the team's node is down
    stack.cluster.wait_ok()
    ids = {request_id for _, request_id in results}
    found = _wait_records(stack, "restart", ids)
    assert len(found) == len(set(found)) == 62  # the 60, and the 2 before: each exactly once


def test_unspent_leases_of_many_teams_go_back_on_close(stack: Stack) -> None:
    # one replica leases quota for three teams (their windows on different slots); closing returns
    # each team's leftover to its own slot (one script per team: one across slots is refused)
    config = LimitsConfig(default_team=TeamLimits(requests_per_minute=100_000))
    clock = 1_795_000_030.0
    stack.cluster.wait_ok()  # whatever the test before left of its outage

    async def run() -> list[float]:
        limiter = RedisLimiter.from_url(stack.cluster.url, config, clock=lambda: clock)
        for i in range(30):
            await limiter.reserve(f"r{i}", f"lease-{i % 3}", "k", 1, 0.0)
        await limiter.aclose()
        reader = RedisLimiter.from_url(stack.cluster.url, config, clock=lambda: clock)
        used = [(await reader.usage(f"lease-{t}", "k"))[0].used for t in range(3)]
        await reader.aclose()
        return used

    assert asyncio.run(run()) == [10, 10, 10]


def test_a_cluster_no_node_answers_is_down_not_a_crash() -> None:
    # the gateway starts while its Redis is down (limits fail open, records spill), cluster or not
    url = f"redis+cluster://127.0.0.1:{procs.free_port()}"
    store = RedisStore.from_url(url)
    with pytest.raises(StoreUnavailable):
        store.write_batch([replica_record("down", 0)])
    keys = RedisKeyStore.from_url(url)
    with pytest.raises(KeyStoreUnavailable):
        keys.lookup("sha256:0")

    async def reserve() -> tuple[str, ...]:
        limiter = RedisLimiter.from_url(url, LimitsConfig(default_team=TeamLimits(requests_per_minute=1)))
        held = await limiter.reserve("r", "t", "k", 1, 0.0)
        await limiter.aclose()
        return held.window_keys

    assert asyncio.run(reserve()) == ()  # failed open
