"""The prefill and decode rates a simulated engine's state reports: its steps' tokens per busy second over the
engine's own stats window (local_engine.stats.ThroughputWindow), counting only the steps that had ended when
the state was published — the engine publishes it between steps, so a poll while a step runs sees none of it."""
from __future__ import annotations

from local_engine.stats import Throughput, ThroughputWindow


class StepRates:
    """A ThroughputWindow whose last step goes in once the clock reads past its end (a run of several
    decode steps: all but its last at once). `rates(now)`: as the engine's state says them at `now`."""

    def __init__(self, window_s: float) -> None:
        self.window = ThroughputWindow(window_s)
        self._running: list[tuple[float, bool, int, float]] = []  # the last step's records (a mixed one: two)
        self._started = 0.0  # when that step began

    def record(self, end: float, is_prefill: bool, tokens: int, seconds: float) -> None:
        """One step's tokens (of one kind: a mixed step records each part, with the same end)."""
        if self._running and self._running[0][0] != end:
            self._flush()
        if not self._running:
            self._started = end - seconds
        else:  # the mixed step's second part: the step began before both parts' time
            self._started -= seconds
        self._running.append((end, is_prefill, tokens, seconds))

    def record_run(self, end: float, tokens_per_step: int, steps: int, seconds: float) -> None:
        """`steps` decode steps of `tokens_per_step` tokens each ending at `end`, `seconds` in all (the last
        step's share of them taken as even: their times differ by a context token or so)."""
        if steps > 1:
            self._flush()
            last = seconds / steps
            self.window.record(end - last, False, tokens_per_step * (steps - 1), seconds - last)
            seconds = last
        self.record(end, False, tokens_per_step if steps else 0, seconds)

    def rates(self, now: float) -> Throughput:
        """The rates the engine's state reports at `now`: the steps that ended by then; while a step runs,
        as of that step's start (the state published before it, then or at the last step's end)."""
        if self._running and self._running[0][0] <= now:
            self._flush()
        return self.window.rates(self._started if self._running else now)

    def _flush(self) -> None:
        for end, is_prefill, tokens, seconds in self._running:
            self.window.record(end, is_prefill, tokens, seconds)
        self._running.clear()
