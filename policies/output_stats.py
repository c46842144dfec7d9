"""Each team's recent completion lengths and their p90: the expected output of a request that does
not say max_tokens. Pure; the p90 is recomputed when a sample arrives, not when it is read."""
from __future__ import annotations

from collections import deque


class OutputStats:
    def __init__(self, window: int = 200, min_samples: int = 5) -> None:
        self.window = window
        self.min_samples = min_samples  # fewer than this: no p90 yet (the defaults apply)
        self._samples: dict[str, deque[int]] = {}
        self._p90: dict[str, int] = {}

    def record(self, team: str, completion_tokens: int) -> None:
        if completion_tokens < 0:
            return
        samples = self._samples.get(team)
        if samples is None:
            samples = self._samples[team] = deque(maxlen=self.window)
        samples.append(completion_tokens)
        if len(samples) >= self.min_samples:
            ordered = sorted(samples)
            self._p90[team] = max(1, ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))])

    def p90(self, team: str) -> int | None:
        return self._p90.get(team)
