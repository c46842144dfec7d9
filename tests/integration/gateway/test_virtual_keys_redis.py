"""Virtual keys and rate-limit windows against a real redis-server: the Redis key store keeps a key's
spec, rotates with a grace period (and revocation ends it), adds up spend; the Redis limiter's
reported "remaining" drops by exactly one per request on one replica, and on a second replica stays
within the documented bound (other replicas' unspent leases count as used)."""
from __future__ import annotations

import asyncio
import time

import pytest
import redis

from gateway.auth import hash_key
from gateway.key_spec import KeySpec
from gateway.key_store_redis import RedisKeyStore
from observability.limit_leases import LEASE_DIVISOR
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_redis import RedisLimiter
from tests.support.redis_server import RedisServer

SPEC = KeySpec(models=("m",), expires_at=4_000_000_000.0, limits=TeamLimits(5, 100, 1.0, 2.0), on_exceed="route",
               metadata={"owner": "ana"}, tags={"project": "x"})


def test_the_spec_round_trips_and_updates(redis_server: RedisServer) -> None:
    store = RedisKeyStore.from_url(redis_server.url)
    key, info = store.create("red", "ci", SPEC)
    assert store.lookup(hash_key(key)) == info and info.spec == SPEC
    assert store.update(info.key_id, "renamed", KeySpec(tags={"a": "b"}))
    found = store.lookup(hash_key(key))
    assert found is not None and found.name == "renamed" and found.spec == KeySpec(tags={"a": "b"})
    assert not store.update("nosuchid", "x", SPEC)
    store.record_use(info.key_id, 0.5, 10.0)
    store.record_use(info.key_id, 0.25, 5.0)
    store.record_use("nosuchid", 1.0, 20.0)  # creates nothing
    row = store.get(info.key_id)
    assert row is not None and (row.requests, row.spend_usd, row.last_used_at) == (2, 0.75, 10.0)
    assert store.get("nosuchid") is None and store.count() == 1
    store.close()


def test_rotation_keeps_the_old_key_for_its_grace_period_only(redis_server: RedisServer) -> None:
    offset = [0.0]
    store = RedisKeyStore.from_url(redis_server.url, clock=lambda: time.time() + offset[0])
    old, info = store.create("red", spec=SPEC)
    rotated = store.rotate(info.key_id, grace_s=600)
    assert rotated is not None
    new, new_info = rotated
    assert new.split("-")[2] == info.key_id and new_info.spec == SPEC
    assert store.lookup(hash_key(old)) is not None and store.lookup(hash_key(new)) is not None
    offset[0] = 601.0
    assert store.lookup(hash_key(old)) is None and store.lookup(hash_key(new)) is not None
    raw = redis.Redis.from_url(redis_server.url)
    assert 0 < raw.ttl(f"hgw:{{keys}}:hash:{hash_key(old)}") <= 601  # Redis drops it by itself, too
    offset[0] = 0.0
    again = store.rotate(info.key_id, grace_s=600)
    assert again is not None and store.lookup(hash_key(new)) is not None
    assert store.revoke(info.key_id)
    assert store.lookup(hash_key(new)) is None and store.lookup(hash_key(again[0])) is None
    assert store.rotate(info.key_id, 60) is None
    raw.close()
    store.close()


def test_a_key_stored_before_specs_existed_still_works(redis_server: RedisServer) -> None:
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    digest = hash_key("sk-old")
    raw.hset("hgw:keys:id:0123abcd", mapping={"key_hash": digest, "team": "red", "name": "old", "created_at": "1.0"})
    raw.hset(f"hgw:keys:hash:{digest}", mapping={"key_id": "0123abcd", "team": "red", "name": "old"})
    raw.sadd("hgw:keys:ids", "0123abcd")
    store = RedisKeyStore.from_url(redis_server.url)
    found = store.lookup(digest)
    assert found is not None and found.team == "red" and found.spec == KeySpec()
    assert store.list()[0].spend_usd == 0.0
    raw.close()
    store.close()


async def _remaining(limiter: RedisLimiter, n: int) -> list[int]:
    out = []
    for i in range(n):
        held = await limiter.reserve(f"r{i}", "red", "k1", 1, 0.0)
        out.append(next(w.remaining for w in held.windows if w.limit_name == "requests_per_minute"))
    return out


def test_remaining_is_exact_on_one_replica_and_bounded_across_two(redis_server: RedisServer) -> None:
    limit = 1000
    lease = limit // LEASE_DIVISOR
    config = LimitsConfig(teams={"red": TeamLimits(requests_per_minute=limit)})

    async def run() -> tuple[list[int], list[int]]:
        first = RedisLimiter.from_url(redis_server.url, config)
        other = RedisLimiter.from_url(redis_server.url, config)
        try:
            mine = await _remaining(first, 40)  # past two leases: local and round-trip reservations alike
            return mine, await _remaining(other, 3)
        finally:
            await first.aclose()
            await other.aclose()

    minute = time.time() // 60
    mine, theirs = asyncio.run(run())
    if time.time() // 60 != minute:
        pytest.skip("the reservations crossed a minute boundary")
    assert mine == list(range(limit - 1, limit - 41, -1))
    true_left = limit - 40 - 1
    # the second replica sees the first's unspent lease as used: it may say less, never more
    assert true_left - lease <= theirs[0] <= true_left
    assert theirs[1] == theirs[0] - 1 and theirs[2] == theirs[0] - 2
