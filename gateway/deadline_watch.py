"""One periodic timer per stream that notices a wait (a read, a send) lasting past a limit: cheaper
than a timer re-armed around every wait (an asyncio.timeout costs ~6–19 µs; aiohttp's per-read timer
~2.3 µs). Subclasses say what an expired wait does."""
from __future__ import annotations

import asyncio


class PeriodicDeadline:
    """Set `since` when a wait begins and None when it ends; `stop()` when done. A wait is seen to be
    too long between `limit_s` and 1.25 × `limit_s` after it began (never while nothing waits)."""

    __slots__ = ("_handle", "_interval", "_loop", "limit_s", "since")

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.since: float | None = None  # when the pending wait began (None: none pending)
        self._loop = asyncio.get_running_loop()
        self._interval = max(0.05, limit_s / 4)
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._interval, self._check)

    def _expired(self) -> bool:
        """Act on a wait past the limit; False if there was nothing to act on (the timer goes on)."""
        raise NotImplementedError

    def _check(self) -> None:
        since = self.since
        if since is not None and self._loop.time() - since >= self.limit_s and self._expired():
            self._handle = None
            return
        self._handle = self._loop.call_later(self._interval, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
