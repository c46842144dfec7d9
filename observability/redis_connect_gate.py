"""One connection attempt at a time to a Redis server whose last attempt failed (or that let a command
time out): while that probe is in flight, other commands that need a new connection fail at once
(callers fail open, as they would on their own failed attempt) instead of each opening a socket that
waits out the connect timeout. A server that answers is never gated."""
from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ConnectGate:
    """Per server (host, port): whether its latest connection attempt failed, and how many attempts
    are in flight. A server that answers is never gated: connections open as many at once as commands
    need. Only after a failed attempt are the others held to one, until one succeeds."""

    def __init__(self) -> None:
        self._failed: dict[tuple[str, int], bool] = {}
        self._connecting: dict[tuple[str, int], int] = {}
        self.refused = 0  # attempts not made: another was in flight to a server that had failed

    def enter(self, server: tuple[str, int]) -> None:
        """Before a connection attempt: raises ConnectionError while a probe of a failed server is in flight."""
        if self._failed.get(server) and self._connecting.get(server):
            self.refused += 1
            raise RedisConnectionError(f"Redis at {server[0]}:{server[1]} failed its last connection attempt, "
                                       "and another attempt is in flight")
        self._connecting[server] = self._connecting.get(server, 0) + 1

    def timed_out(self, server: tuple[str, int]) -> None:
        """A command got no answer within the socket timeout: a hung server (stopped, or busy loading
        its data) fails connects the same way, so the next ones are held to one at a time."""
        self._failed[server] = True

    def leave(self, server: tuple[str, int], ok: bool | None) -> None:
        """After the attempt: ok True (connected), False (failed), None (cancelled: it tells nothing)."""
        self._connecting[server] -= 1
        if ok is not None:
            self._failed[server] = not ok


class _Gated:
    """A redis-py asyncio connection whose connects (a pool's new connection, or a command's reconnect
    on a retry) pass through the `connect_gate` it is made with."""

    host: str
    port: int | str
    is_connected: bool

    def __init__(self, *args: Any, connect_gate: ConnectGate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._connect_gate = connect_gate

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        server = (self.host, int(self.port))
        self._connect_gate.enter(server)
        ok: bool | None = None
        try:
            await super().connect_check_health(  # type: ignore[misc]
                check_health=check_health, retry_socket_connect=retry_socket_connect)
            ok = True
        except Exception:
            ok = False
            raise
        finally:
            self._connect_gate.leave(server, ok)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except RedisTimeoutError:
            self._connect_gate.timed_out((self.host, int(self.port)))
            raise


class GatedConnection(_Gated, aioredis.Connection):
    """redis:// (TCP)."""


class GatedSSLConnection(_Gated, aioredis.SSLConnection):
    """rediss:// (TLS)."""


def gate_pool(pool: aioredis.ConnectionPool) -> None:
    """Make `pool`'s new connections gated, over TCP or TLS (a unix socket's pool is left as it is)."""
    gated = {aioredis.Connection: GatedConnection, aioredis.SSLConnection: GatedSSLConnection}.get(pool.connection_class)
    if gated is not None:
        pool.connection_class = gated
        pool.connection_kwargs["connect_gate"] = ConnectGate()
