"""Which Redis client a REDIS_URL selects: `redis://`, `rediss://`, `unix://` one server;
`redis+cluster://host:port[,host:port…]` (`rediss+cluster://` with TLS) a Redis Cluster, found from
any of the nodes listed; how they retry and pool. Also the hash tag that keeps one team's keys in one
cluster slot."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import ClusterError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError

from observability.redis_cluster_async import MIN_IDLE_KEPT, TRIM_INTERVAL_S, AsyncCluster, disconnect_all
from observability.redis_connect_gate import gate_pool
from observability.redis_sync_pool import TrimmedPool, trimmed_client

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# The cluster client's own ways of saying "no answer" (a slot no node serves while its master is
# down, the cluster marked failed): not RedisError, or not the ConnectionError the callers expect.
CLUSTER_DOWN = (RedisClusterException, ClusterError)
# One retry, at once: the cluster client's default backs off for ~2 s per command on a dead node, while
# every caller here has its own answer to a failure (the limiter fails open, the ledger spills and
# replays, the key store serves its cache). Not none: after a node restarts, each pooled connection to
# it fails once, and the retry (on a fresh connection) is what keeps that from failing the command.
_RETRIES = 1


def is_cluster(url: str) -> bool:
    return url.partition("://")[0].lower() in _CLUSTER_SCHEMES


def _nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """The URL of the first node in the plain scheme, and (host, port) of the others listed."""
    scheme, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    auth, at, hosts = netloc.rpartition("@")
    first, *others = hosts.split(",")
    extra = []
    for node in others:
        host, colon, port = node.rpartition(":")
        extra.append((host, int(port)) if colon else (node, 6379))
    return f"{_CLUSTER_SCHEMES[scheme.lower()]}://{auth}{at}{first}{slash}{path}", extra


def sync_client(url: str, **kwargs: Any) -> redis.Redis | LazyCluster:
    """A blocking client for `url` (the ledger and the key store run in threads). `client_name` (CLIENT
    SETNAME, default "hybridgw") tells in CLIENT LIST which part of a gateway holds a connection."""
    kwargs.setdefault("client_name", "hybridgw")
    if not is_cluster(url):
        return trimmed_client(url, **kwargs)
    from redis.cluster import ClusterNode
    from redis.retry import Retry

    first, extra = _nodes(url)
    # each node's pool trimmed as the one server's is (redis-py's per-node pools never close a connection)
    return LazyCluster(lambda: redis.RedisCluster.from_url(
        first, startup_nodes=[ClusterNode(h, p) for h, p in extra], retry=Retry(NoBackoff(), _RETRIES),
        connection_pool_class=TrimmedPool, **kwargs))


class LazyCluster:
    """A redis.RedisCluster made on its first command. Its constructor connects, and raises when no
    node answers; a gateway must start while Redis is down (limits fail open, records spill), as it
    does with one server. Until a node answers, every command raises the cluster's error again."""

    def __init__(self, make: Callable[[], redis.RedisCluster]) -> None:
        self._make = make
        self._client: redis.RedisCluster | None = None
        self._lock = threading.Lock()

    def register_script(self, script: str) -> Script:
        return Script(self, script.encode())  # type: ignore[arg-type]  # bytes: no encoder (no client) needed

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make()
        return getattr(self._client, name)

    def close(self) -> None:
        """Close the client and every node's pool: redis-py closes each node's client but not its pool
        (made from a URL, the pool is the node's own), whose connections, and trim timer, stayed open."""
        if self._client is not None:
            nodes = self._client.get_nodes()
            self._client.close()
            for node in nodes:
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()


def is_cluster_client(client: object) -> bool:
    return isinstance(client, (LazyCluster, redis.RedisCluster, aioredis.RedisCluster))


def async_client(url: str, *, max_connections: int, **kwargs: Any) -> aioredis.Redis | aioredis.RedisCluster:
    """An asyncio client for `url` (the limiter, on the gateway's event loop). One server: a blocking
    pool, so a burst queues for a connection instead of failing. A cluster: at most max_connections
    commands in flight (the others wait their turn) and pools trimmed back after a burst, see
    redis_cluster_async. Named "hybridgw-limiter" in CLIENT LIST unless `client_name` says otherwise."""
    from redis.asyncio.retry import Retry as AsyncRetry

    kwargs.setdefault("client_name", "hybridgw-limiter")

    if not is_cluster(url):
        # A pooled connection Redis closed (it restarted) fails its next command: try once more on a new
        # one (a connection error only: a timeout again would double the wait on a hung Redis).
        retry = AsyncRetry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        pool = _OldestFirstPool.from_url(url, max_connections=max_connections, timeout=2.0, retry=retry, **kwargs)
        # while Redis fails to answer, one connection attempt at a time (the others fail open at once):
        # before, each command opened its own socket and held it up to the connect timeout
        gate_pool(pool)
        return aioredis.Redis(connection_pool=pool)
    from redis.asyncio.cluster import ClusterNode

    first, extra = _nodes(url)
    return AsyncCluster.from_url(first, startup_nodes=[ClusterNode(h, p) for h, p in extra],
                                 max_in_flight=max_connections, retry=AsyncRetry(NoBackoff(), _RETRIES), **kwargs)


class _OldestFirst(aioredis.ConnectionPool):
    """Hands out the connection idle longest (redis-py's pool hands out the newest). After Redis
    restarts, every pooled connection holds a dead socket until it is next used (then it reconnects);
    newest-first, the ones below the usual concurrency are never used again and keep their fds (the
    soak saw 22 held for good). Oldest-first, each is used, and so renewed, within a pool's worth of
    commands. (redis-py 8's pool internals: `_available_connections`, `_in_use_connections`.)"""

    def get_available_connection(self) -> Any:
        if not self._available_connections:
            return super().get_available_connection()
        connection = self._available_connections.pop(0)
        self._in_use_connections.add(connection)
        return connection


class _Trimmed(aioredis.ConnectionPool):
    """Every TRIM_INTERVAL_S (checked as a connection comes back), keeps one idle connection more than
    the most in use at once since the last check and closes the others. A pile-up (Redis down, or a
    host too busy to keep up) opened up to max_connections; oldest-first, every one of them stays in
    turn, so none ever looks idle, and they were kept for good (the hour soak: 14 → 72 Redis sockets).
    While more than the floor stay idle, one timer trims again: traffic that stops right after a burst
    does not keep the burst's connections (the soak at 160 req/s: 11 → 34 at its idle end)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._busiest = 0  # the most connections in use at once since the last trim
        self._next_trim = time.monotonic() + TRIM_INTERVAL_S
        self._closing: set[asyncio.Task[None]] = set()
        self._follow_up: asyncio.TimerHandle | None = None

    def get_available_connection(self) -> Any:
        connection = super().get_available_connection()
        self._busiest = max(self._busiest, len(self._in_use_connections))
        return connection

    async def release(self, connection: Any) -> None:
        await super().release(connection)  # first in the order: the blocking pool's lock is let go here
        now = time.monotonic()
        if now >= self._next_trim:
            self._trim()
        elif self._follow_up is None and len(self._available_connections) > MIN_IDLE_KEPT:
            self._follow_up = asyncio.get_running_loop().call_later(self._next_trim - now, self._trim_on_timer)

    def _trim(self) -> None:
        keep = max(self._busiest + 1, MIN_IDLE_KEPT) - len(self._in_use_connections)
        self._next_trim, self._busiest = time.monotonic() + TRIM_INTERVAL_S, len(self._in_use_connections)
        surplus = []
        while len(self._available_connections) > max(keep, 0):
            surplus.append(self._available_connections.pop(0))  # the longest idle: after a restart, dead
        if surplus:  # closed beside the command that came back, which does not wait for it
            task = asyncio.create_task(disconnect_all(surplus))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        if self._follow_up is None and len(self._available_connections) > MIN_IDLE_KEPT:
            self._follow_up = asyncio.get_running_loop().call_later(TRIM_INTERVAL_S, self._trim_on_timer)

    def _trim_on_timer(self) -> None:
        self._follow_up = None
        self._trim()  # with no traffic since, the next one keeps only the floor

    async def disconnect(self, inuse_connections: bool = True) -> None:
        if self._follow_up is not None:
            self._follow_up.cancel()
            self._follow_up = None
        await asyncio.gather(*self._closing, return_exceptions=True)
        await super().disconnect(inuse_connections)


class _OldestFirstPool(_Trimmed, aioredis.BlockingConnectionPool, _OldestFirst):
    """The blocking pool (a burst waits for a connection) that hands out the oldest idle one and closes
    what a burst opened once traffic no longer needs it."""


def team_tag(team: str) -> str:
    """`{team}`: Redis Cluster hashes only what is between the braces, so every key of a team that
    carries it lands in one slot and one script may touch them all. Quoted, so a brace in a team's
    name cannot end the tag early; harmless on a single server."""
    return "{" + quote(team, safe="") + "}"
