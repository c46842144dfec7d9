"""Follow-up work of finished requests (limit settlement), off the request path: what is queued in one turn
of the event loop runs in one task, in order, instead of one task per request (~10 µs of the loop each)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class FollowUps:
    """Queued coroutines, each awaited once by a batch task; `drain()` waits until all have run."""

    __slots__ = ("_log", "_queued", "_tasks")

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._queued: list[Coroutine[Any, Any, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._queued.append(coro)
        if len(self._queued) == 1:  # the first of this turn starts the task that runs them all
            task = asyncio.get_running_loop().create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        # Taken at once: what is queued while these await (a Redis round trip) goes to the next task, so a
        # slow settlement never holds up the ones after it for longer than its own batch.
        batch, self._queued = self._queued, []
        for i, coro in enumerate(batch):
            try:
                await coro
            except asyncio.CancelledError:
                for left in batch[i + 1:]:
                    left.close()  # cancelled (shutdown past its grace): never started, as their tasks were
                raise
            except Exception as exc:
                self._log.warning("background task failed: %r", exc)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
