"""Standard-normal draws for the replay's hosted TTFTs that follow their distribution in every stretch of a
replay, not only on average: the quantiles of a fine grid taken in bit-reversed (van der Corput) order from a
seeded start, so the first n of them spread over the whole distribution for any n (a sample's p95 is the
model's p95), where n seeded pseudo-random draws give one sample's p95, the same one on every replay."""
from __future__ import annotations

import random
from statistics import NormalDist

BITS = 12  # a grid of 4,096 quantiles: every 4,096 draws take each once


class StratifiedNormal:
    """`next()`: the next standard-normal draw; `rng` picks where the sequence starts (the replay's seed)."""

    def __init__(self, rng: random.Random) -> None:
        size = 1 << BITS
        inv = NormalDist().inv_cdf
        self._z = [inv((k + 0.5) / size) for k in range(size)]
        self._order = [int(f"{k:0{BITS}b}"[::-1], 2) for k in range(size)]
        self._mask = size - 1
        self._offset = rng.randrange(size)
        self._next = 0

    def next(self) -> float:
        i = self._next
        self._next = i + 1
        return self._z[(self._order[i & self._mask] + self._offset) & self._mask]
