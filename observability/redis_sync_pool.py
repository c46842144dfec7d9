"""The blocking clients' one-server pool (the ledger's, the key store's): closes what concurrent threads
opened once they no longer need it, as the limiter's asyncio pool does (redis_clients._Trimmed)."""
from __future__ import annotations

import threading
import time
from typing import Any

import redis

from observability.redis_cluster_async import MIN_IDLE_KEPT, TRIM_INTERVAL_S


class TrimmedPool(redis.ConnectionPool):
    """redis-py's thread-safe pool, trimmed: every TRIM_INTERVAL_S it keeps one idle connection more than
    the most in use at once since the last trim (at least MIN_IDLE_KEPT) and closes the others, the
    longest idle first. redis-py's never closes one: each thread that uses the client while another
    does opens one more (the key cache asks for several keys at once in threads; after a Redis outage
    every key it refreshes did), and they were kept for good (the soak's idle end: Redis sockets 7 → 9).
    While more than the floor stay idle a timer trims again, so traffic that stops keeps nothing extra."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._busiest = 0  # the most connections in use at once since the last trim
        self._next_trim = time.monotonic() + TRIM_INTERVAL_S
        self._follow_up: threading.Timer | None = None
        self._closed = False

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = super().get_connection(*args, **kwargs)
        with self._lock:
            self._busiest = max(self._busiest, len(self._in_use_connections))
        return connection

    def release(self, connection: Any) -> None:
        super().release(connection)
        if time.monotonic() >= self._next_trim:
            self._trim()
        else:
            self._arm(self._next_trim - time.monotonic())

    def _arm(self, delay_s: float) -> None:
        """A timer to trim again while more than the floor are idle (none if one is set already)."""
        with self._lock:
            if self._closed or self._follow_up is not None or len(self._available_connections) <= MIN_IDLE_KEPT:
                return
            self._follow_up = threading.Timer(max(delay_s, 0.0), self._trim_on_timer)
            self._follow_up.daemon = True
            self._follow_up.start()

    def _trim(self) -> None:
        with self._lock:
            in_use = len(self._in_use_connections)
            keep = max(max(self._busiest + 1, MIN_IDLE_KEPT) - in_use, 0)
            self._next_trim, self._busiest = time.monotonic() + TRIM_INTERVAL_S, in_use
            surplus = []
            while len(self._available_connections) > keep:
                surplus.append(self._available_connections.pop(0))  # the longest idle (the pool reuses the newest)
        for connection in surplus:  # outside the lock: a close does not hold up the threads asking for one
            connection.disconnect()
        self._arm(TRIM_INTERVAL_S)

    def _trim_on_timer(self) -> None:
        with self._lock:
            self._follow_up = None
        self._trim()  # with no traffic since, the next one keeps only the floor

    def disconnect(self, inuse_connections: bool = True) -> None:
        with self._lock:
            self._closed = True
            if self._follow_up is not None:
                self._follow_up.cancel()
                self._follow_up = None
        super().disconnect(inuse_connections)


def trimmed_client(url: str, **kwargs: Any) -> redis.Redis:
    """redis.Redis.from_url(url, **kwargs), on a TrimmedPool (closing the client closes the pool)."""
    client = redis.Redis(connection_pool=TrimmedPool.from_url(url, **kwargs))
    client.auto_close_connection_pool = True
    return client
