"""The state of one long-lived background task or thread (ledger writer, engine-state poller, policy
reload watcher) as /readyz reports it: running, or retrying since when after which error, and the
back-off it waits before the next try. Thread-safe; no I/O."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

TaskPhase = Literal["starting", "running", "retrying", "stopped"]


def backoff_s(failures: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Delay before the next try after `failures` failures in a row: base·2^(n−1), at most cap_s."""
    if failures <= 0:
        return 0.0
    return min(cap_s, base_s * 2.0 ** min(failures - 1, 30))


@dataclass(frozen=True)
class TaskState:
    name: str
    state: TaskPhase
    since: float  # unix seconds the task entered this state
    failures: int = 0  # failures in a row (0 while running)
    last_error: str | None = None  # the latest failure, kept after recovery (may name teams / upstreams)
    last_error_at: float | None = None

    def public(self) -> dict[str, Any]:
        """What anyone may see: the state, since when, how many failures; never an error string."""
        return {"state": self.state, "since": round(self.since, 3), "failures": self.failures}

    def detail(self) -> dict[str, Any]:
        """The admin view: the public fields and the last error."""
        last_at = None if self.last_error_at is None else round(self.last_error_at, 3)
        return {**self.public(), "last_error": self.last_error, "last_error_at": last_at}


class TaskStatus:
    """Mutable tracker a task updates (`ok`, `failed`, `stopped`); `snapshot()` is what others read."""

    def __init__(self, name: str, *, base_s: float = 0.5, cap_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self._base_s, self._cap_s = base_s, cap_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = TaskState(name, "starting", clock())

    def ok(self) -> None:
        with self._lock:
            s = self._state
            if s.state != "running":
                self._state = TaskState(self.name, "running", self._clock(), 0, s.last_error, s.last_error_at)

    def failed(self, error: BaseException | str) -> float:
        """Note a failure; returns how long to back off before the next try."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._lock:
            s, now = self._state, self._clock()
            since = s.since if s.state == "retrying" else now
            self._state = TaskState(self.name, "retrying", since, s.failures + 1, message[:500], now)
            return backoff_s(s.failures + 1, self._base_s, self._cap_s)

    def stopped(self) -> None:
        with self._lock:
            s = self._state
            self._state = TaskState(self.name, "stopped", self._clock(), s.failures, s.last_error, s.last_error_at)

    def snapshot(self) -> TaskState:
        return self._state
