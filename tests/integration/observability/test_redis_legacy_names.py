"""A single Redis written by a version from before the hash tags keeps its data: a budget window
spent under the old counter name still counts (and is moved to the tagged name), old rollups and
records are still reported, a record written under the old seen key is not counted twice, and API
keys made under the old names are moved to the tagged ones."""
from __future__ import annotations

import asyncio
import time

import pytest
import redis

from gateway.auth import hash_key
from gateway.key_store_redis import RedisKeyStore
from observability.limits import window
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_protocol import LimitExceeded
from observability.limits_redis import RedisLimiter
from observability.redis_store import RedisStore
from observability.rollups import period_start
from observability.stores import encode_record
from tests.integration.observability.replica import replica_record
from tests.support.redis_server import RedisServer

NANO = 1_000_000_000


def test_a_day_budget_spent_under_the_old_name_still_counts(redis_server: RedisServer) -> None:
    now = time.time()
    start, _ = window("usd_per_day", now)
    raw = redis.Redis.from_url(redis_server.url)
    old = f"hgw:lim:team:red:usd_per_day:{start}"
    raw.set(old, str(int(0.9 * NANO)), ex=90_000)  # $0.90 of $1.00 spent before the upgrade
    config = LimitsConfig(teams={"red": TeamLimits(usd_per_day=1.0)})

    async def run() -> list[str]:
        limiter = RedisLimiter.from_url(redis_server.url, config, lease_quota=False)
        (before,) = await limiter.usage("red", "k")
        assert before.used == pytest.approx(0.9)  # read under the old name before anything moved it
        await limiter.reserve("r1", "red", "k", 10, 0.05)
        refused = []
        try:
            await limiter.reserve("r2", "red", "k", 10, 0.08)  # 0.95 + 0.08 > 1.00
        except LimitExceeded as exc:
            refused.append(exc.limit)
        await limiter.aclose()
        return refused

    assert asyncio.run(run()) == ["usd_per_day"]
    assert raw.exists(old) == 0  # moved
    tagged = f"hgw:lim:{{red}}:team:red:usd_per_day:{start}"
    assert int(raw.get(tagged) or 0) == int(0.95 * NANO) and raw.ttl(tagged) > 0
    raw.close()


def test_old_rollups_and_records_are_read_and_old_ids_deduplicated(redis_server: RedisServer) -> None:
    record = replica_record("old", 0)  # team alpha
    raw = redis.Redis.from_url(redis_server.url)
    hour = period_start(record.time, "hour")
    raw.hset(f"hgw:roll:{record.team}:hour:{hour}", mapping={"requests": 5, "prompt_tokens": 50})
    store = RedisStore.from_url(redis_server.url)
    # as the old script wrote it: seen key, rollups, stream, all under untagged names
    raw.set(f"hgw:seen:{record.request_id}", "1")
    raw.xadd(f"hgw:records:{record.team}", {"r": encode_record(record)})
    raw.sadd("hgw:teams", record.team)
    assert store.write_batch([record]) == 0  # written before the upgrade: not again
    fresh = replica_record("new", 3)  # the same team, the same hour
    assert store.write_batch([fresh]) == 1
    (rollup,) = store.rollups(record.team, "hour", hour, hour + 3600)
    assert rollup.fields["requests"] == 6  # 5 before the upgrade + 1 after
    ids = {r.request_id for r in store.records(record.team, 0, time.time() + 1e9)}
    assert ids == {record.request_id, fresh.request_id}
    store.close()
    raw.close()


def test_a_key_an_older_cli_makes_after_start_up_is_found_too(redis_server: RedisServer) -> None:
    store = RedisKeyStore.from_url(redis_server.url)
    assert store.count() == 0  # the one-time move has run (nothing to move)
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    digest = hash_key("sk-made-by-an-old-cli")  # during a rolling upgrade
    raw.hset("hgw:keys:id:0badc0de", mapping={"key_hash": digest, "team": "red", "name": "old", "created_at": "1.0"})
    raw.hset(f"hgw:keys:hash:{digest}", mapping={"key_id": "0badc0de", "team": "red", "name": "old"})
    raw.sadd("hgw:keys:ids", "0badc0de")
    found = store.lookup(digest)  # a miss moves what is left under the old names, then looks again
    assert found is not None and found.key_id == "0badc0de" and store.count() == 1
    assert raw.exists("hgw:keys:ids", f"hgw:keys:hash:{digest}", "hgw:keys:id:0badc0de") == 0
    assert store.revoke("0badc0de") and store.lookup(digest) is None
    raw.close()
    store.close()
