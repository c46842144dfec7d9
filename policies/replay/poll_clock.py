"""When the replay's gateway polls an engine with `--poll-clock`: on a clock of its own (a period from a
seeded phase, as the real poller runs), or when a recording's views show the real one polled and from
when it routed on each poll (a busy gateway reads a poll's answer late)."""
from __future__ import annotations

import bisect
import math
import random
import zlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from policies.replay.traffic import TrafficRecord


class PollClock(Protocol):
    next: float  # when the next poll is taken (inf: none)

    def pop_due(self, now: float) -> list[tuple[float, float]]:
        """The polls taken by `now` and not yet handed out, as (taken, seen by the gateway from), in order
        (call when next ≤ now); `next` moves past them."""
        ...


class PeriodClock:
    """A poll every `period` seconds from `first`, seen as soon as taken; of those due at once only the
    last matters (the gateway reads none of the others)."""

    def __init__(self, first: float, period: float) -> None:
        self.next, self.period = first, period

    def pop_due(self, now: float) -> list[tuple[float, float]]:
        last = self.next + math.floor((now - self.next) / self.period) * self.period
        self.next = last + self.period
        return [(last, last)]


class ListClock:
    """Polls at given (taken, seen from) times, sorted by the time taken."""

    def __init__(self, polls: Sequence[tuple[float, float]]) -> None:
        self.polls = sorted(polls)
        self._i = 0
        self.next = self.polls[0][0] if self.polls else math.inf

    def pop_due(self, now: float) -> list[tuple[float, float]]:
        j = bisect.bisect_right(self.polls, (now, math.inf))
        due, self._i = self.polls[self._i:j], j
        self.next = self.polls[j][0] if j < len(self.polls) else math.inf
        return due


def period_clock(start: float, period: float, seed: int, engine: str) -> PeriodClock:
    """A clock whose phase is the seed's and that polled once before `start` (as the gateway does when
    it starts, before any request comes)."""
    phase = random.Random(seed * 7919 + zlib.crc32(engine.encode()) + 1).random() * period
    return PeriodClock(start + phase - period, period)


def recorded_polls(traffic: Sequence[TrafficRecord], engine: str, merge_s: float = 0.05) -> list[tuple[float, float]]:
    """When the real gateway polled `engine` and from when it routed on each poll, from the views its records
    were routed on, as (taken, seen from) on the traffic's clock: taken = arrival + the view's polled_s (older
    records: arrival − its age, early by the wait before routing); seen from the arrival of the first request
    routed on it. The views of one poll fall within `merge_s` of each other."""
    seen = sorted((r.time + (v.polled_s if v.polled_s is not None else -v.age_s), r.time) for r in traffic
                  if r.recorded is not None and (v := r.recorded.view.get(engine)) is not None)
    polls: list[list[float]] = []  # [taken, first seen, the cluster's first taken]
    for taken, arrival in seen:
        if polls and taken - polls[-1][2] <= merge_s:
            polls[-1][0], polls[-1][1] = taken, min(polls[-1][1], arrival)  # the latest: nearest the poll
        else:
            polls.append([taken, arrival, taken])
    return [(taken, max(taken, first)) for taken, first, _ in polls]


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
        clocks[name] = (ListClock([(t + offset, v + offset) for t, v in polls]) if polls
                        else period_clock(start, period, seed, name))
    return clocks
