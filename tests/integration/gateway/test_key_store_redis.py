"""The Redis key store against a real redis-server: the same create / lookup / list / revoke / count
as the SQLite one, only hashes stored; and the key cache over it while Redis is down (keys seen
recently keep serving, others get a 503, never a 500)."""
from __future__ import annotations

import asyncio

import pytest
import redis

from gateway.auth import hash_key
from gateway.errors import ServiceUnavailable, error_info
from gateway.key_cache import KeyCache
from gateway.key_store import KeyStoreUnavailable
from gateway.key_store_redis import RedisKeyStore
from tests.support.redis_server import RedisServer


def test_roundtrip_and_only_hashes_are_stored(redis_server: RedisServer) -> None:
    store = RedisKeyStore.from_url(redis_server.url)
    assert store.count() == 0
    key, info = store.create("red", "ci")
    other, _ = store.create("blue")
    assert store.lookup(hash_key(key)) == info
    assert [r.key_id for r in store.list()] == [info.key_id, other.split("-")[2]]
    raw = redis.Redis.from_url(redis_server.url)
    dump = b"".join(k + b"".join(str(v).encode() for v in raw.hgetall(k).items()) for k in raw.keys("hgw:*")
                    if raw.type(k) == b"hash")
    assert key.encode() not in dump and key.split("-", 3)[3].encode() not in dump  # the secret may hold "-"
    assert store.revoke(info.key_id) and not store.revoke(info.key_id) and not store.revoke("nope")
    assert store.lookup(hash_key(key)) is None
    assert [r.key_id for r in store.list()] == [other.split("-")[2]]
    assert len(store.list(include_revoked=True)) == 2 and store.count() == 2
    raw.close()
    store.close()


def test_while_redis_is_down_recent_keys_serve_and_others_get_a_503(redis_server: RedisServer) -> None:
    store = RedisKeyStore.from_url(redis_server.url)
    now = [0.0]
    cache = KeyCache(store, ttl_s=5.0, stale_s=60.0, clock=lambda: now[0])
    key, info = store.create("red")
    assert asyncio.run(cache.lookup(hash_key(key))) == info
    redis_server.kill()
    with pytest.raises(KeyStoreUnavailable):
        store.lookup(hash_key(key))
    now[0] = 30.0  # past the TTL, within stale_s: served from what was seen
    assert asyncio.run(cache.lookup(hash_key(key))) == info
    with pytest.raises(ServiceUnavailable) as unknown:
        asyncio.run(cache.lookup(hash_key("sk-hgw-never-seen")))
    assert error_info(unknown.value).status == 503
    now[0] = 120.0  # too old to trust
    with pytest.raises(ServiceUnavailable):
        asyncio.run(cache.lookup(hash_key(key)))
    store.close()
