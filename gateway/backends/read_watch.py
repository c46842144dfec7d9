"""The deadline between a stream's chunks, kept by one periodic timer per stream instead of a timer
re-armed on every read (aiohttp's sock_read cancels and re-creates one per chunk, ~2.3 µs; an
asyncio.timeout per read costs ~6 µs). A read that has waited past the limit gets a TimeoutError from
the reader itself, so the stream fails as on any other read timeout."""
from __future__ import annotations

import asyncio

import aiohttp


class ReadWatch:
    """Wrap each read in `waiting()` / `done()`; `stop()` when the stream ends. A wait is seen to be too
    long between `limit_s` and 1.25 × `limit_s` after it began (never while the stream is not reading)."""

    __slots__ = ("_handle", "_interval", "_loop", "_reader", "limit_s", "since")

    def __init__(self, reader: aiohttp.StreamReader, limit_s: float) -> None:
        self.limit_s = limit_s
        self.since: float | None = None  # when the pending read began (None: not reading)
        self._reader = reader
        self._loop = asyncio.get_running_loop()
        self._interval = max(0.05, limit_s / 4)
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._interval, self._check)

    def _check(self) -> None:
        since = self.since
        if since is not None and self._loop.time() - since >= self.limit_s:
            self._handle = None
            self._reader.set_exception(TimeoutError(f"no data for {self.limit_s:g} s"))
            return
        self._handle = self._loop.call_later(self._interval, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
