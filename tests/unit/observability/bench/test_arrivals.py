"""Open-loop arrivals: the asked mean rate and the dispersion of a Poisson / gamma process."""

from __future__ import annotations

import statistics

import pytest

from observability.bench.arrivals import arrival_offsets, mean_rate, scheduled_offsets


def _gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in zip([0.0, *offsets], offsets)]


def test_poisson_arrivals_have_the_rate_and_dispersion_asked_for() -> None:
    offsets = arrival_offsets(20_000, rate=50.0, seed=7)
    gaps = _gaps(offsets)
    assert len(offsets) / offsets[-1] == pytest.approx(50.0, rel=0.03)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.05)  # exponential: CV 1
    # counts per 1 s window: Poisson, so variance / mean (index of dispersion) ≈ 1
    counts = [0] * int(offsets[-1])
    for t in offsets:
        if int(t) < len(counts):
            counts[int(t)] += 1
    assert statistics.variance(counts) / statistics.mean(counts) == pytest.approx(1.0, abs=0.2)


def test_gamma_shape_sets_burstiness_at_the_same_rate() -> None:
    smooth, bursty = (
        arrival_offsets(20_000, 20.0, shape=4.0, seed=1),
        arrival_offsets(20_000, 20.0, shape=0.25, seed=1),
    )
    for offsets in (smooth, bursty):
        assert len(offsets) / offsets[-1] == pytest.approx(20.0, rel=0.05)
    cv = [statistics.stdev(_gaps(o)) / statistics.mean(_gaps(o)) for o in (smooth, bursty)]
    assert cv[0] == pytest.approx(0.5, rel=0.06) and cv[1] == pytest.approx(2.0, rel=0.1)


def test_same_seed_same_arrivals_and_bad_rate_refused() -> None:
    assert arrival_offsets(10, 3.0, seed=5) == arrival_offsets(10, 3.0, seed=5)
    assert arrival_offsets(10, 3.0, seed=5) != arrival_offsets(10, 3.0, seed=6)
    with pytest.raises(ValueError):
        arrival_offsets(10, 0.0)


def test_a_schedule_has_each_periods_rate() -> None:
    schedule = ((40.0, 10.0), (5.0, 10.0))  # busy 10 s, quiet 10 s, repeated
    offsets = scheduled_offsets(9000, schedule, seed=3)
    per_period: dict[int, list[int]] = {0: [], 1: []}
    for cycle in range(int(offsets[-1] // 20)):
        busy = sum(1 for t in offsets if cycle * 20 <= t < cycle * 20 + 10)
        quiet = sum(1 for t in offsets if cycle * 20 + 10 <= t < cycle * 20 + 20)
        per_period[0].append(busy)
        per_period[1].append(quiet)
    assert statistics.mean(per_period[0]) / 10 == pytest.approx(40.0, rel=0.03)
    assert statistics.mean(per_period[1]) / 10 == pytest.approx(5.0, rel=0.06)
    assert mean_rate(schedule) == 22.5
    assert scheduled_offsets(5, ((0.0, 1.0), (2.0, 1.0)), seed=1)[0] >= 1.0  # a silent period sends nothing
    with pytest.raises(ValueError):
        scheduled_offsets(5, ((0.0, 1.0),))
