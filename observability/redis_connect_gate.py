"""One connection attempt at a time to a Redis server that is not answering (a connection attempt failed,
a command timed out or was answered LOADING, and none has been answered since): while one attempt is in
flight, other commands that need a new connection fail at once (callers fail open, as they would on
their own failed attempt) instead of each opening a socket that waits out the timeout. A server that
answers is never gated."""
from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ConnectGate:
    """Per server (host, port): whether it is failing, and how many connection attempts are in flight.
    Failing: a connection attempt failed, or a command timed out or was answered LOADING; until a
    command is answered again (a connect alone does not tell: a loading server completes the
    handshake, then refuses every command). A server that answers is never gated: connections open as
    many at once as commands need."""

    def __init__(self) -> None:
        self._failing: dict[tuple[str, int], bool] = {}
        self._connecting: dict[tuple[str, int], int] = {}
        self.refused = 0  # attempts not made: another was in flight to a failing server

    def enter(self, server: tuple[str, int]) -> None:
        """Before a connection attempt: raises ConnectionError while one to a failing server is in flight."""
        if self._failing.get(server) and self._connecting.get(server):
            self.refused += 1
            raise RedisConnectionError(f"Redis at {server[0]}:{server[1]} is not answering, and a connection "
                                       "attempt to it is in flight")
        self._connecting[server] = self._connecting.get(server, 0) + 1

    def leave(self, server: tuple[str, int], *, failed: bool) -> None:
        """After the attempt (a cancelled one did not fail)."""
        self._connecting[server] -= 1
        if failed:
            self._failing[server] = True

    def failing(self, server: tuple[str, int]) -> None:
        """A command got no answer within the socket timeout, or LOADING."""
        self._failing[server] = True

    def answered(self, server: tuple[str, int]) -> None:
        if self._failing.get(server):
            self._failing[server] = False


class _Gated:
    """A redis-py asyncio connection whose connects (a pool's new connection, or a command's reconnect
    on a retry) pass through the `connect_gate` it is made with, and whose replies tell the gate
    whether the server answers."""

    host: str
    port: int | str
    is_connected: bool

    def __init__(self, *args: Any, connect_gate: ConnectGate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._connect_gate = connect_gate
        self._server = (self.host, int(self.port))
        self._handshake = False  # connecting: its replies (HELLO, CLIENT SETNAME) do not count as answers

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        self._connect_gate.enter(self._server)
        failed, self._handshake = False, True
        try:
            await super().connect_check_health(  # type: ignore[misc]
                check_health=check_health, retry_socket_connect=retry_socket_connect)
        except Exception:
            failed = True
            raise
        finally:
            self._handshake = False
            self._connect_gate.leave(self._server, failed=failed)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except (RedisTimeoutError, BusyLoadingError):
            self._connect_gate.failing(self._server)
            raise
        if not self._handshake:
            self._connect_gate.answered(self._server)
        return response


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
