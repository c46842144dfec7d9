"""The deadline between a stream's chunks, kept by one periodic timer per stream (gateway/deadline_watch.py)
instead of a timer re-armed on every read. A read that has waited past the limit gets a TimeoutError from
the connection itself, so the stream fails as on any other read timeout."""
from __future__ import annotations

from typing import Protocol

from gateway.deadline_watch import PeriodicDeadline


class _Failable(Protocol):
    def set_exception(self, exc: BaseException) -> None: ...


class ReadWatch(PeriodicDeadline):
    """Set `since` before each read and None after it; `stop()` when the stream ends."""

    __slots__ = ("_reader",)

    def __init__(self, reader: _Failable, limit_s: float) -> None:
        self._reader = reader
        super().__init__(limit_s)

    def _expired(self) -> bool:
        self._reader.set_exception(TimeoutError(f"no data for {self.limit_s:g} s"))
        return True
