"""A deadline on sends to a client that may stop reading. uvicorn's send waits while the socket's
buffer is full; a per-send `asyncio.timeout` costs ~19 µs a chunk, so one periodic timer per stream
cancels the relay instead when a send has waited longer than the limit."""
from __future__ import annotations

import asyncio

from starlette.types import Message, Send


class WriteWatch:
    """Create inside the relaying task; `send` through it; `stop` when done; `absorb` in an
    `except CancelledError` tells (and undoes) a cancel that was this watch's."""

    __slots__ = ("_handle", "_interval", "_loop", "_since", "_task", "limit_s", "stalled")

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.stalled = False
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._since: float | None = None  # when the pending send began (None: none pending)
        self._interval = max(0.05, limit_s / 4)  # a stall is seen between limit_s and 1.25 × limit_s
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._interval, self._check)

    async def send(self, send: Send, message: Message) -> None:
        self._since = self._loop.time()
        await send(message)
        self._since = None

    def _check(self) -> None:
        since = self._since
        if since is not None and self._loop.time() - since >= self.limit_s and self._task is not None:
            self.stalled = True
            self._handle = None
            self._task.cancel()
            return
        self._handle = self._loop.call_later(self._interval, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def absorb(self) -> bool:
        if not self.stalled or self._task is None:
            return False
        self._task.uncancel()
        return True
