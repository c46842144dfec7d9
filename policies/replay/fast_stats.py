"""Drop-in versions of the gateway's rolling statistics (team output p90, backend TTFT p95) that keep
their window sorted with bisect instead of sorting it on every sample: the same numbers, at the rate
a replay of millions of requests records them."""
from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from policies.health import HealthBook, TtftStats
from policies.live import HealthView
from policies.output_stats import OutputStats
from policies.schema import Health


class SortedWindow:
    """The last `size` values, also kept in order."""

    def __init__(self, size: int) -> None:
        self.recent: deque[float] = deque()
        self.ordered: list[float] = []
        self.size = size

    def add(self, value: float) -> None:
        if len(self.recent) == self.size:
            old = self.recent.popleft()
            del self.ordered[bisect.bisect_left(self.ordered, old)]
        self.recent.append(value)
        bisect.insort(self.ordered, value)


class FastOutputStats(OutputStats):
    """OutputStats (window, min_samples, p90 rule unchanged) without the sort per sample."""

    def __init__(self, window: int = 200, min_samples: int = 5) -> None:
        super().__init__(window, min_samples)
        self._windows: dict[str, SortedWindow] = {}

    def record(self, team: str, completion_tokens: int) -> None:
        if completion_tokens < 0:
            return
        window = self._windows.get(team)
        if window is None:
            window = self._windows[team] = SortedWindow(self.window)
        recent, ordered = window.recent, window.ordered  # window.add, inline (once per request)
        if len(recent) == window.size:
            del ordered[bisect.bisect_left(ordered, recent.popleft())]
        recent.append(completion_tokens)
        bisect.insort(ordered, completion_tokens)
        n = len(ordered)
        if n >= self.min_samples:
            self._p90[team] = max(1, int(ordered[min(n - 1, int(0.9 * n))]))


class FastTtftStats(TtftStats):
    """TtftStats (EWMA, p95 of the last `window`) without the sort per sample."""

    def __init__(self, alpha: float, window: int = 64) -> None:
        super().__init__(alpha, window)
        self._sorted = SortedWindow(window)

    def record(self, ttft_s: float) -> None:
        ewma = self.ewma_s
        self.ewma_s = ttft_s if ewma is None else ewma + self.alpha * (ttft_s - ewma)
        window = self._sorted  # SortedWindow.add, inline (once per first token of a replay)
        recent, ordered = window.recent, window.ordered
        if len(recent) == window.size:
            del ordered[bisect.bisect_left(ordered, recent.popleft())]
        recent.append(ttft_s)
        bisect.insort(ordered, ttft_s)
        n = len(ordered)
        self.p95_s = ordered[min(n - 1, int(0.95 * n))]


class FastHealthBook(HealthBook):
    """HealthBook with the fast TTFT statistics. After a success on a closed breaker (nearly every result
    in a replay) only that backend's entry of the cached view is replaced, in place: the replay reads a
    view only within one decision, never across a record (tests/unit/policies/replay/test_fast_stats.py)."""

    def __init__(self, backends: Iterable[str], settings: Health) -> None:
        super().__init__(backends, settings)
        self.ttft = {name: FastTtftStats(settings.ttft_ewma_alpha) for name in self.ttft}
        self._views: dict[str, HealthView] = {}  # what the cached view (a read-only proxy) shows

    def _build(self, now: float) -> tuple[Mapping[str, HealthView], float]:
        view, until = super()._build(now)
        self._views = dict(view)
        return MappingProxyType(self._views), until

    def record(self, backend: str, ok: bool, ttft_s: float | None, now: float) -> None:
        breaker = self.breakers.get(backend)
        if not ok or self._view is None or breaker is None or breaker.opened or breaker.consecutive_failures:
            super().record(backend, ok, ttft_s, now)  # a state may change: rebuilt at the next view()
            return
        breaker.record(True, now)  # closed before, closed after: the view's `until` stands
        stats = self.ttft[backend]
        if ttft_s is not None:
            stats.record(ttft_s)
        self._views[backend] = HealthView("closed", breaker.reopen_at(), stats.ewma_s, stats.p95_s, 0)


def fast_health(book: HealthBook) -> HealthBook:
    """The same book with its TTFT statistics swapped for the fast ones (before any sample)."""
    book.ttft = {name: FastTtftStats(book.settings.ttft_ewma_alpha) for name in book.ttft}
    return book
