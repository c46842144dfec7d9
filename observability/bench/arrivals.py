"""When requests start: a closed loop (fixed concurrency, the next starts when one ends) or an open
loop whose gaps are gamma-distributed at a mean rate (shape 1 = Poisson); seeded, pure."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ClosedLoop:
    concurrency: int


@dataclass(frozen=True)
class OpenLoop:
    rate: float  # mean requests per second
    shape: float = 1.0  # gamma shape k: 1 is Poisson; the gaps' coefficient of variation is 1/sqrt(k)
    max_in_flight: int = 10_000  # a safety bound on open connections, not a load shape
    schedule: tuple[tuple[float, float], ...] = ()  # (rate, seconds) periods, repeated; busy and quiet

    def offsets(self, count: int, seed: int) -> list[float]:
        if self.schedule:
            return scheduled_offsets(count, self.schedule, self.shape, seed)
        return arrival_offsets(count, self.rate, self.shape, seed)


Load = ClosedLoop | OpenLoop


def arrival_offsets(count: int, rate: float, shape: float = 1.0, seed: int = 0) -> list[float]:
    """Seconds from the start at which each of `count` requests is sent; the first at its first gap
    (as vLLM's benchmark_serving does), gaps ~ Gamma(k, 1 / (k·rate)) with mean 1/rate."""
    if rate <= 0 or shape <= 0:
        raise ValueError("rate and shape must be positive")
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        t += rng.gammavariate(shape, 1.0 / (shape * rate))
        out.append(t)
    return out


def scheduled_offsets(
    count: int, schedule: tuple[tuple[float, float], ...], shape: float = 1.0, seed: int = 0
) -> list[float]:
    """Arrivals whose rate follows `schedule` ((rate, seconds) periods, repeated): within a period
    gaps are drawn at its rate; a gap that would cross the period's end restarts at the next period
    (exact for Poisson, which has no memory). A period of rate 0 is silent."""
    if not schedule or any(r < 0 or d <= 0 for r, d in schedule) or not any(r > 0 for r, _ in schedule):
        raise ValueError("a schedule needs (rate >= 0, seconds > 0) periods, one rate positive")
    rng = random.Random(seed)
    t, start, k, out = 0.0, 0.0, 0, []
    while len(out) < count:
        rate, length = schedule[k % len(schedule)]
        gap = rng.gammavariate(shape, 1.0 / (shape * rate)) if rate > 0 else float("inf")
        if t + gap < start + length:
            t += gap
            out.append(t)
        else:
            start += length
            t, k = start, k + 1
    return out


def mean_rate(schedule: tuple[tuple[float, float], ...]) -> float:
    return sum(r * d for r, d in schedule) / sum(d for _, d in schedule)
