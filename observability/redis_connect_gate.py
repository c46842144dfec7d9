"""One connection attempt at a time to a Redis server not known to answer: a failing one (attempt failed,
timeout, LOADING) refuses the others at once (callers fail open); one not heard from lately makes them wait
for the first one's answer. A server that answered within FRESH_S is never gated."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# A server that answered a command this recently is answering: connects open as many at once as
# commands need. Past it (a restart, an outage the limiter's leases rode out, a quiet spell) the
# first connect must get a command answered before the others open: a restarted server still LOADING
# accepts connections and answers the handshake, so a burst of connects all got through and each then
# waited on LOADING (the outage bench: ~60 Redis sockets at once).
FRESH_S = 1.0
WAIT_S = 2.0  # the longest a connect waits for the attempt in flight (the limiter's socket timeout)

Server = tuple[str, int]


class ConnectGate:
    """Per server (host, port): answered when, failing or not, and how many attempts are in flight. An
    attempt is in flight from its connect until its first command is answered, fails, or the
    connection is closed (a connect alone does not tell: a loading server completes the handshake,
    then refuses every command). Failing: until a command is answered again."""

    def __init__(self, *, fresh_s: float = FRESH_S, wait_s: float = WAIT_S) -> None:
        self._fresh_s, self._wait_s = fresh_s, wait_s
        self._failing: dict[Server, bool] = {}
        self._attempts: dict[Server, int] = {}
        self._answered_at: dict[Server, float] = {}
        self._settled: dict[Server, asyncio.Event] = {}  # set when an attempt ends, or the server fails
        self.refused = 0  # attempts not made: another was in flight to a failing server
        self.waited = 0  # attempts that waited for the one in flight to a server not heard from lately

    async def enter(self, server: Server) -> None:
        """Before a connection attempt: waits for the attempt in flight to a server not heard from
        lately; raises ConnectionError while one to a failing server is in flight, or if the wait
        ends with no answer."""
        while self._attempts.get(server) and not self._answering(server):
            if self._failing.get(server):
                self._refuse(server, "a connection attempt to it is in flight")
            self.waited += 1
            settled = self._settled.setdefault(server, asyncio.Event())
            try:
                async with asyncio.timeout(self._wait_s):
                    await settled.wait()
            except TimeoutError:
                self._refuse(server, f"the connection attempt in flight got no answer in {self._wait_s} s")
        self._attempts[server] = self._attempts.get(server, 0) + 1

    def settle(self, server: Server, *, failing: bool | None) -> None:
        """An attempt ended: its first command answered (failing=False), the attempt or that command
        failed (True), or the connection went away first (None)."""
        self._attempts[server] -= 1
        if failing is None:
            self._wake(server)
        elif failing:
            self.failing(server)
        else:
            self.answered(server)
            self._wake(server)

    def failing(self, server: Server) -> None:
        """A command got no answer within the socket timeout, or LOADING."""
        self._failing[server] = True
        self._wake(server)

    def answered(self, server: Server) -> None:
        self._answered_at[server] = time.monotonic()
        if self._failing.get(server):
            self._failing[server] = False

    def _answering(self, server: Server) -> bool:
        return not self._failing.get(server) and \
            time.monotonic() - self._answered_at.get(server, -self._fresh_s) < self._fresh_s

    def _wake(self, server: Server) -> None:
        settled = self._settled.pop(server, None)
        if settled is not None:
            settled.set()

    def _refuse(self, server: Server, why: str) -> None:
        self.refused += 1
        raise RedisConnectionError(f"Redis at {server[0]}:{server[1]} is not answering: {why}")


class _Gated:
    """A redis-py asyncio connection whose connects (a pool's new connection, or a reconnect) pass
    through the `connect_gate` it is made with, and whose replies tell the gate whether the server
    answers."""

    host: str
    port: int | str
    is_connected: bool

    def __init__(self, *args: Any, connect_gate: ConnectGate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._connect_gate = connect_gate
        self._server = (self.host, int(self.port))
        self._attempt = False  # connected (or connecting), no command answered yet
        self._handshake = False  # connecting: its replies (HELLO, CLIENT SETNAME) do not count as answers

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        await self._connect_gate.enter(self._server)
        self._attempt = self._handshake = True
        try:
            await super().connect_check_health(  # type: ignore[misc]
                check_health=check_health, retry_socket_connect=retry_socket_connect)
        except Exception:
            self._settle(failing=True)
            raise
        except BaseException:  # cancelled: not a failure
            self._settle(failing=None)
            raise
        finally:
            self._handshake = False

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if self._handshake:  # its failures are the connect's
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        try:
            response = await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except (RedisTimeoutError, BusyLoadingError):
            self._settle(failing=True)
            raise
        except ResponseError:  # an error reply is an answer
            self._settle(failing=False)
            raise
        self._settle(failing=False)
        return response

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        if self._attempt:
            self._settle(failing=None)
        await super().disconnect(*args, **kwargs)  # type: ignore[misc]

    def _settle(self, *, failing: bool | None) -> None:
        if self._attempt:
            self._attempt = False
            self._connect_gate.settle(self._server, failing=failing)
        elif failing:
            self._connect_gate.failing(self._server)
        elif failing is not None:
            self._connect_gate.answered(self._server)


class GatedConnection(_Gated, aioredis.Connection):
    """redis:// (TCP)."""


class GatedSSLConnection(_Gated, aioredis.SSLConnection):
    """rediss:// (TLS)."""


def gated_class(connection_class: type) -> type | None:
    """The gated kind of a TCP or TLS connection class (None for any other: a unix socket's)."""
    return {aioredis.Connection: GatedConnection, aioredis.SSLConnection: GatedSSLConnection}.get(connection_class)


def gate_pool(pool: aioredis.ConnectionPool) -> None:
    """Make `pool`'s new connections gated, over TCP or TLS (a unix socket's pool is left as it is)."""
    gated = gated_class(pool.connection_class)
    if gated is not None:
        pool.connection_class = gated
        pool.connection_kwargs["connect_gate"] = ConnectGate()
