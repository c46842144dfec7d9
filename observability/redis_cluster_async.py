"""The asyncio Redis Cluster client the limiter uses: redis-py's, with commands in flight bounded (a
burst waits for a turn, as on the one-server blocking pool) and each node's pool shrunk back to what
recent traffic needed, so an outage's pile-up of commands does not leave its connections open for good."""
from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from typing import Any

import redis.asyncio as aioredis
from redis._parsers.commands import AsyncCommandsParser
from redis.exceptions import ConnectionError as RedisConnectionError

from observability.redis_connect_gate import ConnectGate, gated_class

# How often each node's pool is trimmed to the most connections it had in use since the last trim. A
# node's pool hands out its idle connections in turn (first in, first out), so every connection a burst
# opened is kept busy enough never to look idle: only a count of what traffic needs tells the surplus.
TRIM_INTERVAL_S = 5.0
MIN_IDLE_KEPT = 2  # per pool (a cluster node's, or the one server's): a quiet minute does not cost the next request a fresh connect
# Past this many commands in flight a command waits for a turn; past the wait it is "no answer"
# (callers fail open, as when the one-server pool has no connection free within its timeout).
GATE_TIMEOUT_S = 2.0
_IN_COMMAND: ContextVar[bool] = ContextVar("in_cluster_command", default=False)


class AsyncCluster(aioredis.RedisCluster):
    """redis-py 8.1's asyncio cluster client with six changes.

    - Started before its first command runs: commands issued together on a client not started yet
      failed with "Connection closed by server", and a limiter's first burst would have failed open.
    - At most `max_in_flight` commands at once. redis-py's node pool has no waiting: a node opens a
      connection per concurrent command (up to its max_connections, then it raises). While a node is
      down every command re-reads the slot map under one lock, commands pile up behind it, and when
      they are let go each node opened one connection per command (the soak: 28 → 162 Redis sockets).
    - Pools trimmed: every TRIM_INTERVAL_S, each node keeps one connection more than the most it had
      in use at once since the last trim; its other idle ones are closed and dropped — on a timer
      too, so traffic that stops right after a burst does not keep the burst's connections. The
      startup nodes' own objects (used only to read the slot map) keep none.
    - The command table read once: redis-py re-reads it (COMMAND, a large reply) on every slot-map
      refresh, and while a node is down each command sent to it causes one, under that one lock.
    - CLUSTERDOWN (a restarted node answers it until it has rejoined) re-reads the slot map instead of
      closing every connection: redis-py's aclose() there closed them under the other commands in
      flight, on healthy nodes too, which failed ("Connection closed by server"), or raised
      AttributeError from a write on a connection closed under it (a 500, not a fail-open).
    - Each node's connects pass a ConnectGate (redis_connect_gate): a node that stopped answering
      gets one connection attempt at a time, not one per command in flight.
    """

    def __init__(self, *args: Any, max_in_flight: int, **kwargs: Any) -> None:
        # a node never needs more than the commands in flight, plus those redis-py is still disconnecting
        super().__init__(*args, max_connections=2 * max_in_flight, **kwargs)
        self._gate = asyncio.Semaphore(max_in_flight)
        self._busiest: dict[str, int] = {}  # node name -> most connections in use seen since the last trim
        self._next_trim = time.monotonic() + TRIM_INTERVAL_S
        self._closing: set[asyncio.Task[None]] = set()
        self._follow_up: asyncio.TimerHandle | None = None
        self.commands_parser = _CommandTableOnce()
        self.connect_gate = ConnectGate()
        gate_nodes(self.nodes_manager, self.connect_gate)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()  # under the client's own lock: one start-up, the others wait
        if self._gate.locked():  # the usual case, a free turn, skips the timer
            try:
                async with asyncio.timeout(GATE_TIMEOUT_S):
                    await self._gate.acquire()
            except TimeoutError:
                raise RedisConnectionError(f"no turn among the cluster client's commands in {GATE_TIMEOUT_S} s") from None
        else:
            await self._gate.acquire()
        self._note_busy()
        inside = _IN_COMMAND.set(True)
        try:
            return await super().execute_command(*args, **kwargs)
        except (RuntimeError, AttributeError) as exc:
            # After a node restarts, a command may be written to a connection closed under it: its
            # transport closed by uvloop (RuntimeError "... the handler is closed", redis-py issue 4287
            # on plain asyncio) or its reader/writer already dropped by a disconnect (AttributeError
            # "'NoneType' object has no attribute 'writelines'" in redis-py's connection module), which
            # redis-py 8.1 lets through. It means "no answer", as a ConnectionError does: callers fail
            # open or spill, never answer 500 (the soak saw 3; the cluster-pools test one in ~3 runs).
            if not closed_under_command(exc):
                raise
            raise RedisConnectionError(f"connection closed under the command: {exc!r}") from exc
        finally:
            _IN_COMMAND.reset(inside)
            self._gate.release()
            self._maybe_trim()

    def _note_busy(self) -> None:
        # a few len()s per command: how many connections each node has in use right now (this
        # command's own is not taken yet, hence the +1 at the trim)
        for node in self.nodes_manager.nodes_cache.values():
            busy = len(node._connections) - len(node._free)
            if busy > self._busiest.get(node.name, 0):
                self._busiest[node.name] = busy

    def _maybe_trim(self) -> None:
        now = time.monotonic()
        if now >= self._next_trim:
            self._trim()
        elif self._follow_up is None:  # one timer at most: the trim happens even if no command follows
            self._follow_up = asyncio.get_running_loop().call_later(self._next_trim - now, self._trim_on_timer)

    def _trim_on_timer(self) -> None:
        self._follow_up = None
        self._trim()

    def _trim(self) -> None:
        self._next_trim = time.monotonic() + TRIM_INTERVAL_S
        busiest, self._busiest = self._busiest, {}
        surplus = [conn for node in self.nodes_manager.nodes_cache.values()
                   for conn in shrink(node, max(busiest.get(node.name, 0) + 1, MIN_IDLE_KEPT))]
        surplus += [conn for node in self._startup_only() for conn in shrink(node, 0)]
        if surplus:
            task = asyncio.create_task(disconnect_all(surplus))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        nodes = self.nodes_manager.nodes_cache.values()
        if self._follow_up is None and any(len(node._free) > MIN_IDLE_KEPT for node in nodes):
            self._follow_up = asyncio.get_running_loop().call_later(TRIM_INTERVAL_S, self._trim_on_timer)

    def _startup_only(self) -> list[Any]:
        """The startup nodes (the URL's) that are objects of their own, not the slot map's: redis-py
        asks them only for the slot map, and each one asked kept its connection for good (one more
        after every node restart that made it ask another: the cluster soak's limiter 7 → 8)."""
        cache = self.nodes_manager.nodes_cache
        return [node for name, node in self.nodes_manager.startup_nodes.items() if cache.get(name) is not node]

    async def aclose(self) -> None:
        if _IN_COMMAND.get():
            # redis-py's own call, on CLUSTERDOWN (or many MOVED): re-read the slot map before the next
            # command; that refresh marks every pooled connection to reconnect once it is free
            self._initialize = True
            return
        if self._follow_up is not None:
            self._follow_up.cancel()
            self._follow_up = None
        await asyncio.gather(*self._closing, return_exceptions=True)
        await super().aclose()


def gate_nodes(nodes_manager: Any, gate: ConnectGate) -> None:
    """Make the nodes' connections gated by `gate` (one gate, keyed by host and port): the startup
    nodes' now, and those the slot map will make (from the manager's connection_kwargs)."""
    for kwargs, node in [(nodes_manager.connection_kwargs, None),
                         *((n.connection_kwargs, n) for n in nodes_manager.startup_nodes.values())]:
        gated = gated_class(node.connection_class if node else kwargs.get("connection_class"))
        if gated is None:
            continue
        kwargs["connect_gate"] = gate
        if node is None:
            kwargs["connection_class"] = gated
        else:
            node.connection_class = gated


class _CommandTableOnce(AsyncCommandsParser):
    """The command table (key positions per command) is the server version's, not the topology's."""

    async def initialize(self, node: Any = None) -> None:
        if not self.commands:
            await super().initialize(node)
        elif node:
            self.node = node  # COMMAND GETKEYS still asks the current default node


def closed_under_command(exc: BaseException) -> bool:
    """Whether `exc` is redis-py writing to or reading from a connection closed under the command,
    not a bug of its own or ours: uvloop's closed handler, or a reader/writer set to None, raised
    from inside redis-py's asyncio connection module."""
    if isinstance(exc, RuntimeError):
        return "closed" in str(exc)
    if not isinstance(exc, AttributeError) or "'NoneType' object" not in str(exc):
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith(("redis/asyncio/connection.py",))


def shrink(node: Any, keep: int) -> list[Any]:
    """Take idle connections out of a redis-py ClusterNode until it holds at most `keep` (in use ones
    are never taken); returns those taken, for the caller to disconnect. (redis-py 8.1's node
    internals: `_connections` all it made, `_free` the idle ones, handed out from the left.)"""
    taken = []
    while len(node._connections) > keep and node._free:
        conn = node._free.pop()
        node._connections.remove(conn)
        taken.append(conn)
    return taken


async def disconnect_all(connections: list[Any]) -> None:
    # a connection already broken may fail to close cleanly: it is dropped all the same
    await asyncio.gather(*(conn.disconnect() for conn in connections), return_exceptions=True)
