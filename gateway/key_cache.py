"""Key lookups for the request path: the store is asked off the event loop (a worker thread) and
each answer is remembered for `ttl_s` (an unknown or revoked key's "no" for `negative_ttl_s`), so a
key revoked on any replica or by the CLI is refused everywhere within that bound. Concurrent misses
of one key share one lookup. While the store is unreachable, answers up to `stale_s` old keep serving;
after a failed lookup the store is left alone for `retry_s` (requests are not each held up by its
timeout) and the warning is logged at most every `warn_interval_s`."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.auth import KeyInfo
from gateway.errors import ServiceUnavailable
from gateway.key_store import KeyStorage, KeyStoreUnavailable

log = logging.getLogger(__name__)
NEGATIVE_TTL_S = 1.0  # a made-up or revoked key retried in a loop costs one lookup a second
RETRY_S = 1.0  # after the store failed, how long lookups are answered without asking it


@dataclass(frozen=True)
class _Entry:
    info: KeyInfo | None  # None: no such active key (remembered too, so unknown keys cost no lookup)
    at: float


class KeyCache:
    def __init__(self, store: KeyStorage, ttl_s: float, *, negative_ttl_s: float = NEGATIVE_TTL_S,
                 stale_s: float = 300.0, max_entries: int = 100_000, retry_s: float = RETRY_S,
                 warn_interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl_s = ttl_s  # 0: ask the store every time
        # never longer than ttl_s: a key made on another replica is not refused for longer than a
        # revoked one is served
        self.negative_ttl_s = min(negative_ttl_s, ttl_s)
        self.stale_s = stale_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._asking: dict[str, asyncio.Future[KeyInfo | None]] = {}  # lookups in flight, by key hash
        self._generation = 0  # moves on forget_all: answers asked for before it are not remembered
        self._retry_s = retry_s
        self._down_until = float("-inf")  # the store failed lately: not asked again before this
        self._down_error = ""  # why the store failed (for the 503's log line while it is left alone)
        self._warn_interval_s = warn_interval_s
        self._last_warning = float("-inf")

    async def lookup(self, key_hash: str) -> KeyInfo | None:
        now = self._clock()
        entry = self._entries.get(key_hash)
        if entry is not None and now - entry.at < (self.ttl_s if entry.info is not None else self.negative_ttl_s):
            return entry.info
        generation = self._generation
        try:
            if now < self._down_until:  # failed a moment ago: answer from what was seen, do not wait on it
                raise KeyStoreUnavailable(self._down_error)
            info = await self._ask(key_hash)
        except KeyStoreUnavailable as exc:
            if now >= self._down_until:
                self._down_until, self._down_error = now + self._retry_s, str(exc)
            if entry is not None and entry.info is not None and now - entry.at < self.stale_s:
                self._warn(f"key store unreachable, serving keys seen up to {self.stale_s:.0f} s ago: {exc}")
                return entry.info
            raise ServiceUnavailable("The gateway cannot reach its key store; retry shortly.",
                                     code="key_store_unavailable", retry_after_s=1.0) from exc
        self._down_until = float("-inf")
        if self.ttl_s > 0 and generation == self._generation:
            self._remember(key_hash, _Entry(info, now))
        return info

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= self._warn_interval_s:
            self._last_warning = now
            log.warning(message)

    def forget_all(self) -> None:
        """After a change on this replica (revoke, update, rotate): seen here at once, not after ttl_s
        (a lookup already in flight may have read the store before the change: it is not joined)."""
        self._entries.clear()
        self._asking.clear()
        self._generation += 1

    async def _ask(self, key_hash: str) -> KeyInfo | None:
        """The store's answer on a worker thread; a request that finds the same key's lookup in
        flight waits for it (at a TTL's end a burst of one key's requests costs one lookup, not N)."""
        asking = self._asking.get(key_hash)
        if asking is None:
            asking = asyncio.ensure_future(asyncio.to_thread(self.store.lookup, key_hash))
            self._asking[key_hash] = asking
            asking.add_done_callback(lambda done: self._asked(key_hash, done))
        return await asyncio.shield(asking)  # one waiter cancelled does not cancel the others' lookup

    def _asked(self, key_hash: str, done: asyncio.Future[KeyInfo | None]) -> None:
        if self._asking.get(key_hash) is done:
            del self._asking[key_hash]
        if not done.cancelled():
            done.exception()  # retrieved here, so no "never retrieved" warning when every waiter left

    def _remember(self, key_hash: str, entry: _Entry) -> None:
        if len(self._entries) >= self._max_entries:  # a flood of made-up keys must not grow memory
            horizon = entry.at - self.stale_s
            self._entries = {h: e for h, e in self._entries.items() if e.at > horizon and e.info is not None}
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
        self._entries[key_hash] = entry
