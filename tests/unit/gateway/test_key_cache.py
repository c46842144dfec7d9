"""The request path's key lookups: answers are remembered for the TTL (a revocation elsewhere is
seen once it passes), a TTL of 0 asks the store every time, and the SQLite store is safe to call
from worker threads."""
from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from gateway.auth import KeyInfo, hash_key
from gateway.errors import ServiceUnavailable
from gateway.key_cache import KeyCache
from gateway.key_store import KeyStore, KeyStoreUnavailable
from tests.support.clock import ManualClock


def test_a_revocation_is_seen_once_the_ttl_has_passed(tmp_path: Path) -> None:
    store, clock = KeyStore.in_data_dir(tmp_path), ManualClock(100.0)
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
    store, clock = KeyStore.in_data_dir(tmp_path), ManualClock(100.0)
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


class CountingStore(KeyStore):
    """The SQLite store, counting the lookups that reach it."""

    lookups = 0

    def lookup(self, key_hash: str) -> KeyInfo | None:
        self.lookups += 1
        return super().lookup(key_hash)


def test_an_unknown_key_is_remembered_for_the_short_negative_ttl(tmp_path: Path) -> None:
    store, clock = CountingStore(tmp_path / "keys.sqlite3"), ManualClock(100.0)
    cache = KeyCache(store, ttl_s=5.0, negative_ttl_s=1.0, clock=clock)
    for _ in range(50):  # a client retrying a made-up key in a loop
        assert asyncio.run(cache.lookup("0" * 64)) is None
    assert store.lookups == 1
    key, info = store.create("red")
    asyncio.run(cache.lookup(hash_key(key)))
    store.revoke(info.key_id)
    clock.now += 5.1
    assert asyncio.run(cache.lookup(hash_key(key))) is None and store.lookups == 3
    clock.now += 0.9
    assert asyncio.run(cache.lookup(hash_key(key))) is None and store.lookups == 3  # the "no" is remembered
    clock.now += 0.2
    assert asyncio.run(cache.lookup(hash_key(key))) is None and store.lookups == 4  # for 1 s, not 5
    store.close()


def test_concurrent_misses_of_one_key_share_one_lookup(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "keys.sqlite3")
    key, info = store.create("red")
    cache = KeyCache(store, ttl_s=1.0)

    async def burst() -> list[KeyInfo | None]:
        return list(await asyncio.gather(*(cache.lookup(hash_key(key)) for _ in range(40))))

    assert asyncio.run(burst()) == [info] * 40
    assert store.lookups == 1
    store.close()


class ReadThenWait(KeyStore):
    """The SQLite store whose lookup reads, then waits to be let go before answering."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.read, self.go = threading.Event(), threading.Event()

    def lookup(self, key_hash: str) -> KeyInfo | None:
        found = super().lookup(key_hash)
        self.read.set()
        self.go.wait(30)
        return found


def test_a_lookup_in_flight_at_forget_all_is_neither_joined_nor_remembered(tmp_path: Path) -> None:
    store, clock = ReadThenWait(tmp_path / "keys.sqlite3"), ManualClock(100.0)
    key, info = store.create("red")
    cache = KeyCache(store, ttl_s=5.0, clock=clock)

    async def revoke_while_asking() -> tuple[KeyInfo | None, KeyInfo | None]:
        first = asyncio.ensure_future(cache.lookup(hash_key(key)))
        await asyncio.to_thread(store.read.wait, 30)  # it has read the key as active
        store.revoke(info.key_id)
        cache.forget_all()  # what the admin API does after revoking on this replica
        second = asyncio.ensure_future(cache.lookup(hash_key(key)))
        store.go.set()
        return await first, await second

    first, second = asyncio.run(revoke_while_asking())
    assert first == info and second is None  # the second did not join the first's stale lookup
    assert asyncio.run(cache.lookup(hash_key(key))) is None  # nor was the stale answer remembered
    store.close()


class FlakyStore(CountingStore):
    """The SQLite store, unreachable while `down` (as Redis is when it stops)."""

    down = False

    def lookup(self, key_hash: str) -> KeyInfo | None:
        if self.down:
            self.lookups += 1
            raise KeyStoreUnavailable("connection refused")
        return super().lookup(key_hash)


def test_while_the_store_is_down_it_is_asked_once_a_retry_interval_and_warned_about_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, clock = FlakyStore(tmp_path / "keys.sqlite3"), ManualClock(100.0)
    cache = KeyCache(store, ttl_s=1.0, stale_s=300.0, retry_s=1.0, clock=clock)
    key, info = store.create("red")
    assert asyncio.run(cache.lookup(hash_key(key))) == info and store.lookups == 1
    store.down, clock.now = True, clock.now + 2.0
    with caplog.at_level(logging.WARNING, logger="gateway.key_cache"):
        for _ in range(50):  # a burst of requests while Redis is down: served from what was seen
            assert asyncio.run(cache.lookup(hash_key(key))) == info
        with pytest.raises(ServiceUnavailable):  # a key never seen cannot be vouched for
            asyncio.run(cache.lookup("0" * 64))
    assert store.lookups == 2  # one failed lookup, then left alone for retry_s
    assert len([r for r in caplog.records if "key store unreachable" in r.message]) == 1
    store.down, clock.now = False, clock.now + 1.1
    store.revoke(info.key_id)
    assert asyncio.run(cache.lookup(hash_key(key))) is None and store.lookups == 3  # back: asked again
    store.close()
