"""The embedded shared limiter's counters: window key → (used, window end), with the one atomic step
every limiter needs — charge all of a request's windows only if each has room. Pure, no I/O: the
supervisor's counts server (counts_server.py) owns one table and serves every worker from it."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SWEEP_AT = 10_000  # windows held before the ended ones are dropped


@dataclass(frozen=True)
class WindowCharge:
    """One window's part of a reservation, as the workers send it (a Charge without its names)."""

    key: str
    amount: int
    limit: int
    window_end: float


class WindowCounts:
    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}

    def charge(self, charges: Sequence[WindowCharge], now: float) -> tuple[int | None, list[int]]:
        """(index of the first window that would overflow, what each window had used). Charges
        every window when none overflows; a charge of nothing never does (a $0 request)."""
        used = [self._counts.get(c.key, (0, 0.0))[0] for c in charges]
        for index, (c, already) in enumerate(zip(charges, used)):
            if c.amount > 0 and already + c.amount > c.limit:
                return index, used
        for c, already in zip(charges, used):
            self._counts[c.key] = (already + c.amount, c.window_end)
        if len(self._counts) > SWEEP_AT:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        return None, used

    def read(self, keys: Sequence[str]) -> list[int]:
        return [self._counts.get(key, (0, 0.0))[0] for key in keys]

    def add(self, deltas: Sequence[tuple[str, int]]) -> None:
        """Settle actual − estimate; a window already gone (ended and swept) stays gone."""
        for key, delta in deltas:
            if key in self._counts:
                used, end = self._counts[key]
                self._counts[key] = (used + delta, end)

    def restore(self, windows: Mapping[str, tuple[int, float]]) -> None:
        """What the current windows used before this start ({key: (amount, window end)})."""
        for key, (amount, end) in windows.items():
            self._counts[key] = (self._counts.get(key, (0, end))[0] + amount, end)

    def __len__(self) -> int:
        return len(self._counts)
