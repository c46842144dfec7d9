"""A deadline on sends to a client that may stop reading. uvicorn's send waits while the socket's
buffer is full; a per-send `asyncio.timeout` costs ~19 µs a chunk, so one periodic timer per stream
(gateway/deadline_watch.py) cancels the relay instead when a send has waited longer than the limit."""
from __future__ import annotations

import asyncio

from starlette.types import Message, Send

from gateway.deadline_watch import PeriodicDeadline


class WriteWatch(PeriodicDeadline):
    """Create inside the relaying task; `send` through it; `stop` when done; `absorb` in an
    `except CancelledError` tells (and undoes) a cancel that was this watch's."""

    __slots__ = ("_task", "stalled")

    def __init__(self, limit_s: float) -> None:
        self.stalled = False
        self._task = asyncio.current_task()
        super().__init__(limit_s)

    async def send(self, send: Send, message: Message) -> None:
        self.since = self._loop.time()
        await send(message)
        self.since = None

    def _expired(self) -> bool:
        if self._task is None:
            return False
        self.stalled = True
        self._task.cancel()
        return True

    def absorb(self) -> bool:
        if not self.stalled or self._task is None:
            return False
        self._task.uncancel()
        return True
