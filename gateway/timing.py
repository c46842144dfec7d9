"""Per-request timing at the gateway: the clock that marks events, and the stats derived from it.

Clock times are `time.perf_counter()` seconds; only `arrival_wall` is a unix time (for the record).
"""
from __future__ import annotations

import time
from dataclasses import dataclass


class RequestClock:
    """Marks arrival, upstream call sent, the upstream's first byte, the first content chunk, every
    later content chunk (as gaps) and the end. A chunk carrying no output (OpenAI's role-only first
    chunk, a bare finish, usage) is no token: it is not marked, so it never sets TTFT or an ITL gap."""

    __slots__ = ("arrival", "arrival_wall", "end", "first_byte", "first_chunk", "gaps", "last_chunk",
                 "upstream_sent")

    def __init__(self, arrival: float | None = None, arrival_wall: float | None = None) -> None:
        self.arrival = time.perf_counter() if arrival is None else arrival
        self.arrival_wall = time.time() if arrival_wall is None else arrival_wall
        self.upstream_sent: float | None = None
        self.first_byte: float | None = None  # the upstream's first chunk of any kind (or response headers)
        self.first_chunk: float | None = None  # the first chunk that carries content: TTFT
        self.last_chunk: float | None = None
        self.gaps: list[float] = []
        self.end: float | None = None

    def mark_upstream_sent(self, now: float | None = None) -> None:
        self.upstream_sent = time.perf_counter() if now is None else now

    def mark_first_byte(self, now: float | None = None) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter() if now is None else now

    def mark_chunk(self, now: float | None = None) -> None:
        """A chunk that carries content (for a non-streamed call: the whole body)."""
        now = time.perf_counter() if now is None else now
        if self.first_chunk is None:
            self.first_chunk = now
        else:
            assert self.last_chunk is not None
            self.gaps.append(now - self.last_chunk)
        self.last_chunk = now

    def mark_end(self, now: float | None = None) -> None:
        if self.end is None:
            self.end = time.perf_counter() if now is None else now


@dataclass(frozen=True)
class TimingStats:
    ttft_s: float | None  # arrival → first content chunk
    upstream_latency_s: float | None  # upstream call sent → first content chunk
    e2e_s: float  # arrival → end
    gaps_s: tuple[float, ...]  # between consecutive content chunks
    itl_p50_s: float | None
    itl_p95_s: float | None
    itl_max_s: float | None


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted, non-empty list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def summarize(clock: RequestClock) -> TimingStats:
    end = clock.end if clock.end is not None else time.perf_counter()
    ttft = None if clock.first_chunk is None else clock.first_chunk - clock.arrival
    upstream = None
    if clock.first_chunk is not None and clock.upstream_sent is not None:
        upstream = clock.first_chunk - clock.upstream_sent
    gaps = sorted(clock.gaps)
    p50 = percentile(gaps, 50) if gaps else None
    p95 = percentile(gaps, 95) if gaps else None
    return TimingStats(ttft, upstream, end - clock.arrival, tuple(clock.gaps), p50, p95,
                       gaps[-1] if gaps else None)
