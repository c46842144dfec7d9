"""The embedded shared limiter's server: the supervisor of `hybridgw serve --workers N` owns one
WindowCounts and serves it to every worker over a unix socket, one JSON array per line, so limits
and budgets stay exact across the workers without Redis. Requests on one connection are answered in
order; a settle ("a") has no answer. Also answers "s" with the supervisor's status (for /readyz)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson

from observability.window_counts import WindowCharge, WindowCounts

log = logging.getLogger("hybridgw.counts")
MAX_LINE = 1 << 20  # one request's windows fit many times over


def answer(counts: WindowCounts, request: list[Any], status: Callable[[], dict[str, Any]]) -> Any:
    """The reply to one request (None: no reply). ["c", [[key, amount, limit, end], ...]] charges,
    ["r", [keys]] reads, ["a", [[key, delta], ...]] settles, ["s"] is the status."""
    op = request[0]
    if op == "c":
        bad, used = counts.charge([WindowCharge(*c) for c in request[1]], time.time())
        return [bad, used]
    if op == "r":
        return counts.read(request[1])
    if op == "a":
        counts.add([(key, int(delta)) for key, delta in request[1]])
        return None
    if op == "s":
        return status()
    raise ValueError(f"unknown op {op!r}")


class _Connection(asyncio.Protocol):
    """One worker's connection: whole lines are answered as they arrive, the answers to one read
    written back in one go (under load a read carries many requests)."""

    def __init__(self, server: CountsServer) -> None:
        self._server = server
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        if len(self._buffer) > MAX_LINE:  # no line is this long: a confused peer; its connection ends
            self._transport.close()
            return
        replies = [orjson.dumps(r) for r in map(self._server.reply, lines) if r is not None]
        if replies:
            self._transport.write(b"\n".join(replies) + b"\n")


class CountsServer:
    def __init__(self, counts: WindowCounts, path: Path, status: Callable[[], dict[str, Any]] = dict) -> None:
        self.counts = counts
        self.path = path
        self._status = status
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), path=str(self.path))

    def reply(self, line: bytes) -> Any:
        """The answer to one request line (None: none is due)."""
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            log.warning("counts: a line that is not JSON: %s", exc)
            return None  # which request it was is unknown; our client never sends one
        try:
            return answer(self.counts, request, self._status)
        except (ValueError, TypeError, IndexError, KeyError) as exc:  # a bad request: say so, keep serving
            log.warning("counts: bad request: %s", exc)
            return None if request[:1] == ["a"] else {"error": str(exc)}

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)
