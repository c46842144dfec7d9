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
