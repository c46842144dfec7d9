"""Timing stats from marked events (explicit clock values: no sleeping, no wall clock)."""
from __future__ import annotations

import pytest

from gateway.timing import RequestClock, percentile, summarize


def test_stream_timing() -> None:
    clock = RequestClock(arrival=10.0, arrival_wall=1.0)
    clock.mark_upstream_sent(10.001)
    for t in (10.1, 10.2, 10.25, 10.45, 10.5):
        clock.mark_chunk(t)
    clock.mark_end(10.6)
    stats = summarize(clock)
    assert stats.ttft_s == pytest.approx(0.1)
    assert stats.upstream_latency_s == pytest.approx(0.099)
    assert stats.gaps_s == pytest.approx((0.1, 0.05, 0.2, 0.05))
    assert stats.itl_p50_s == pytest.approx(0.075)
    assert stats.itl_max_s == pytest.approx(0.2)
    assert stats.itl_p95_s == pytest.approx(0.185)
    assert stats.e2e_s == pytest.approx(0.6)


def test_no_chunks() -> None:
    clock = RequestClock(arrival=5.0)
    clock.mark_end(5.5)
    stats = summarize(clock)
    assert stats.ttft_s is None and stats.itl_p50_s is None and stats.gaps_s == ()
    assert stats.e2e_s == pytest.approx(0.5)


def test_end_marked_once() -> None:
    clock = RequestClock(arrival=0.0)
    clock.mark_end(1.0)
    clock.mark_end(2.0)
    assert summarize(clock).e2e_s == 1.0


def test_percentile() -> None:
    assert percentile([1.0], 95) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
