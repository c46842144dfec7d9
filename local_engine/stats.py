"""Engine step time: recent prefill and decode tokens per second over a sliding window, and lifetime totals of
step wall and CPU seconds (their ratio is the share of a core the step loop got: a shared host's contention)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Throughput:
    prefill_tokens_per_s: float  # prompt tokens computed per second spent in prefill steps
    decode_tokens_per_s: float  # tokens generated per second spent in decode steps
    num_steps: int  # steps in the window


class ThroughputWindow:
    """Per-step (end time, is_prefill, tokens, seconds) for the last ``window_s`` seconds, with running sums.

    Rates are per second of busy step time, so an idle engine keeps reporting what it can do
    (what the gateway needs to estimate time to first token), not a rate diluted by idleness.
    Recording is O(1) amortized: it runs once per engine step.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._steps: deque[tuple[float, bool, int, float]] = deque()
        self._tokens = [0, 0]  # indexed by is_prefill
        self._seconds = [0.0, 0.0]

    def record(self, end_time: float, is_prefill: bool, num_tokens: int, seconds: float) -> None:
        self._steps.append((end_time, is_prefill, num_tokens, seconds))
        self._tokens[is_prefill] += num_tokens
        self._seconds[is_prefill] += seconds
        self._drop_before(end_time - self.window_s)

    def rates(self, now: float) -> Throughput:
        self._drop_before(now - self.window_s)
        tokens, seconds = self._tokens, self._seconds
        return Throughput(
            prefill_tokens_per_s=tokens[1] / seconds[1] if seconds[1] > 0 else 0.0,
            decode_tokens_per_s=tokens[0] / seconds[0] if seconds[0] > 0 else 0.0,
            num_steps=len(self._steps),
        )

    def _drop_before(self, cutoff: float) -> None:
        steps = self._steps
        while steps and steps[0][0] < cutoff:
            _, is_prefill, num_tokens, step_s = steps.popleft()
            self._tokens[is_prefill] -= num_tokens
            self._seconds[is_prefill] -= step_s
        if not steps:  # no float drift left over
            self._tokens = [0, 0]
            self._seconds = [0.0, 0.0]


class StepTotals:
    """Lifetime sums since the engine started: steps, their wall seconds and the CPU seconds the step loop's
    thread used in them. Counters, so a reader takes differences over any window it samples; CPU ÷ wall
    is how much of a core the steps got (below 1 while other processes hold the cores), which a replay
    uses to carry a model fitted on one run to another run on a busier or quieter host (docs/replay.md)."""

    def __init__(self) -> None:
        self.num_steps = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def record(self, seconds: float, cpu_seconds: float) -> None:
        self.num_steps += 1
        self.seconds += seconds
        self.cpu_seconds += cpu_seconds
