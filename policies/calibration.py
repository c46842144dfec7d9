"""Per-target calibration of our prompt-token count against the target's own, learned online from
the `prompt_tokens` each finished request reports: reported ≈ offset + slope × counted."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class _Line:
    """Exponentially weighted means and co-moments of (counted, reported)."""

    weight: float = 0.0
    mean_x: float = 0.0
    mean_y: float = 0.0
    cxx: float = 0.0
    cxy: float = 0.0

    def add(self, x: float, y: float, keep: float) -> None:
        # Older samples decay by `keep`; the newest counts 1 (weighted West update).
        self.weight, self.cxx, self.cxy = self.weight * keep + 1.0, self.cxx * keep, self.cxy * keep
        dx = x - self.mean_x
        self.mean_x += dx / self.weight
        self.mean_y += (y - self.mean_y) / self.weight
        self.cxx += dx * (x - self.mean_x)
        self.cxy += dx * (y - self.mean_y)


class Calibration:
    """A local model's count differs from ours in two ways: its chat template adds a fixed number
    of tokens (SmolLM2 inserts a default system prompt, ~20 tokens), and its tokenizer splits text
    differently (~1.1× cl100k for SmolLM2). A pure ratio learned on short prompts (32 / 9 ≈ 3.5)
    would triple every long prompt, so both are learned: least squares over recent requests, the
    slope pulled toward 1 until the prompts seen differ enough in length to tell the two apart.
    """

    def __init__(self, alpha: float = 0.1, low: float = 0.25, high: float = 4.0,
                 prior_spread_tokens: float = 100.0) -> None:
        self.keep = 1.0 - alpha  # weight left to the older samples at each new one
        self.low = low  # slope bounds
        self.high = high
        self.prior = prior_spread_tokens ** 2  # slope 1 weighs like samples this far apart
        self._lines: dict[str, _Line] = {}

    def observe(self, key: str, counted: int, reported: int) -> None:
        """Learn from one request: `counted` by us before the call, `reported` by the target after."""
        if counted <= 0 or reported <= 0:
            return
        self._lines.setdefault(key, _Line()).add(float(counted), float(reported), self.keep)

    def line(self, key: str) -> tuple[float, float]:
        """(offset, slope); (0, 1) before anything was learned."""
        fit = self._lines.get(key)
        if fit is None:
            return 0.0, 1.0
        slope = min(self.high, max(self.low, (fit.cxy + self.prior) / (fit.cxx + self.prior)))
        return fit.mean_y - slope * fit.mean_x, slope

    def ratio(self, key: str) -> float:
        return self.line(key)[1]

    def apply(self, key: str, counted: int) -> int:
        if key not in self._lines:
            return counted
        offset, slope = self.line(key)
        return max(1, math.ceil(offset + slope * counted))

    def snapshot(self) -> dict[str, tuple[float, float]]:
        return {key: self.line(key) for key in self._lines}
