"""The request path's key lookups: answers are remembered for the TTL (a revocation elsewhere is
seen once it passes), a TTL of 0 asks the store every time, and the SQLite store is safe to call
from worker threads."""
from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.auth import hash_key
from gateway.key_cache import KeyCache
from gateway.key_store import KeyStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_revocation_is_seen_once_the_ttl_has_passed(tmp_path: Path) -> None:
    store, clock = KeyStore.in_data_dir(tmp_path), Clock()
    cache = KeyCache(store, ttl_s=5.0, clock=clock)
    key, info = store.create("red")
    assert asyncio.run(cache.lookup(hash_key(key))) == info
    store.revoke(info.key_id)  # as another process would
    clock.now += 4.9
    assert asyncio.run(cache.lookup(hash_key(key))) == info  # within the bound: still remembered
    clock.now += 0.2
    assert asyncio.run(cache.lookup(hash_key(key))) is None
    store.close()


def test_without_a_ttl_every_lookup_asks_the_store(tmp_path: Path) -> None:
    store = KeyStore.in_data_dir(tmp_path)
    cache = KeyCache(store, ttl_s=0.0)
    key, info = store.create("red")
    assert asyncio.run(cache.lookup(hash_key(key))) == info
    store.revoke(info.key_id)
    assert asyncio.run(cache.lookup(hash_key(key))) is None
    store.close()


def test_forget_all_drops_what_was_remembered(tmp_path: Path) -> None:
    store, clock = KeyStore.in_data_dir(tmp_path), Clock()
    cache = KeyCache(store, ttl_s=5.0, clock=clock)
    key, info = store.create("red")
    asyncio.run(cache.lookup(hash_key(key)))
    store.revoke(info.key_id)
    cache.forget_all()  # what the admin API does after a revocation on this replica
    assert asyncio.run(cache.lookup(hash_key(key))) is None
    store.close()


def test_many_concurrent_lookups_from_worker_threads(tmp_path: Path) -> None:
    store = KeyStore.in_data_dir(tmp_path)
    made = [store.create(f"team{i % 3}") for i in range(20)]
    cache = KeyCache(store, ttl_s=0.0)

    async def all_at_once() -> list[object]:
        return list(await asyncio.gather(*(cache.lookup(hash_key(k)) for k, _ in made * 5)))

    assert asyncio.run(all_at_once()) == [info for _, info in made * 5]
    store.close()
