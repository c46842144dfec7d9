"""Key lookups for the request path: the store is asked off the event loop (a worker thread) and
each answer is remembered for `ttl_s`, so a key revoked on any replica is refused everywhere within
that bound. While the store is unreachable, answers up to `stale_s` old keep serving."""
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


@dataclass(frozen=True)
class _Entry:
    info: KeyInfo | None  # None: no such active key (remembered too, so unknown keys cost no lookup)
    at: float


class KeyCache:
    def __init__(self, store: KeyStorage, ttl_s: float, *, stale_s: float = 300.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl_s = ttl_s  # 0: ask the store every time
        self.stale_s = stale_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    async def lookup(self, key_hash: str) -> KeyInfo | None:
        now = self._clock()
        entry = self._entries.get(key_hash)
        if entry is not None and now - entry.at < self.ttl_s:
            return entry.info
        try:
            info = await asyncio.to_thread(self.store.lookup, key_hash)
        except KeyStoreUnavailable as exc:
            if entry is not None and entry.info is not None and now - entry.at < self.stale_s:
                log.warning("key store unreachable, serving a key seen %.0f s ago: %s", now - entry.at, exc)
                return entry.info
            raise ServiceUnavailable("The gateway cannot reach its key store; retry shortly.",
                                     code="key_store_unavailable", retry_after_s=1.0) from exc
        if self.ttl_s > 0:
            self._remember(key_hash, _Entry(info, now))
        return info

    def forget_all(self) -> None:
        """After a revocation on this replica: seen here at once, not after ttl_s."""
        self._entries.clear()

    def _remember(self, key_hash: str, entry: _Entry) -> None:
        if len(self._entries) >= self._max_entries:  # a flood of made-up keys must not grow memory
            horizon = entry.at - self.stale_s
            self._entries = {h: e for h, e in self._entries.items() if e.at > horizon and e.info is not None}
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
        self._entries[key_hash] = entry
