"""When the replay's gateway polls an engine with `--poll-clock`: on a clock of its own (a period from a
seeded phase, as the real poller runs), or at the times a recording's views show the real one polled."""
from __future__ import annotations

import bisect
import math
import random
import zlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from policies.replay.traffic import TrafficRecord


class PollClock(Protocol):
    next: float  # the time of the next poll (inf: none)

    def due(self, now: float) -> float:
        """The time of the last poll due by `now` (call when next ≤ now); the ones before it are skipped."""
        ...

    def taken(self, at: float) -> None:
        """The poll at `at` was taken: `next` moves past it."""
        ...


class PeriodClock:
    """A poll every `period` seconds from `first`."""

    def __init__(self, first: float, period: float) -> None:
        self.next, self.period = first, period

    def due(self, now: float) -> float:
        return self.next + math.floor((now - self.next) / self.period) * self.period

    def taken(self, at: float) -> None:
        self.next = at + self.period


class ListClock:
    """Polls at given times (sorted)."""

    def __init__(self, times: Sequence[float]) -> None:
        self.times = sorted(times)
        self._i = 0
        self.next = self.times[0] if self.times else math.inf

    def due(self, now: float) -> float:
        return self.times[bisect.bisect_right(self.times, now) - 1]

    def taken(self, at: float) -> None:
        self._i = bisect.bisect_right(self.times, at)
        self.next = self.times[self._i] if self._i < len(self.times) else math.inf


def period_clock(start: float, period: float, seed: int, engine: str) -> PeriodClock:
    """A clock whose phase is the seed's and that polled once before `start` (as the gateway does when
    it starts, before any request comes)."""
    phase = random.Random(seed * 7919 + zlib.crc32(engine.encode()) + 1).random() * period
    return PeriodClock(start + phase - period, period)


def recorded_polls(traffic: Sequence[TrafficRecord], engine: str, merge_s: float = 0.05) -> list[float]:
    """The times (the traffic's clock) the real gateway polled `engine`, from the views its records were
    routed on: arrival + the view's polled_s; in older records arrival − its age, early by the request's
    wait before routing. The views of one poll fall within `merge_s`; the latest is the nearest to it."""
    seen = sorted(r.time + (v.polled_s if v.polled_s is not None else -v.age_s) for r in traffic
                  if r.recorded is not None and (v := r.recorded.view.get(engine)) is not None)
    polls: list[float] = []
    start = -math.inf
    for t in seen:
        if t - start > merge_s:
            start = t
            polls.append(t)
        else:
            polls[-1] = t
    return polls


POLL_CLOCKS = ("period", "recorded")


def engine_clocks(kind: str, periods: Mapping[str, float], seed: int, traffic: Sequence[TrafficRecord],
                  offset: float) -> dict[str, PollClock] | None:
    """Each engine's clock (engine → its poll period), on the simulated clock (= the traffic's + `offset`):
    "period" (a seeded phase), "recorded" (the recording's polls; an engine none recorded: by period),
    "" (none: polled at arrivals, the replay's default)."""
    if not kind:
        return None
    if kind not in POLL_CLOCKS:
        raise ValueError(f"unknown poll clock {kind!r}; choose from: {', '.join(POLL_CLOCKS)}")
    start = traffic[0].time + offset
    clocks: dict[str, PollClock] = {}
    for name, period in sorted(periods.items()):
        polls = recorded_polls(traffic, name) if kind == "recorded" else []
        clocks[name] = ListClock([t + offset for t in polls]) if polls else period_clock(start, period, seed, name)
    return clocks
