"""Recent throughput: tokens per second of busy step time, old steps leave the window; lifetime step totals."""
from __future__ import annotations

import pytest

from local_engine.stats import StepTotals, ThroughputWindow


def test_rates_per_busy_second_by_kind() -> None:
    w = ThroughputWindow(window_s=10.0)
    w.record(1.0, True, 100, 0.5)
    w.record(2.0, False, 8, 0.1)
    w.record(3.0, False, 8, 0.1)
    r = w.rates(now=3.0)
    assert r.prefill_tokens_per_s == pytest.approx(200.0)
    assert r.decode_tokens_per_s == pytest.approx(80.0)
    assert r.num_steps == 3


def test_steps_older_than_the_window_drop_out() -> None:
    w = ThroughputWindow(window_s=10.0)
    w.record(1.0, True, 100, 0.5)
    w.record(12.0, False, 4, 0.1)
    r = w.rates(now=12.0)
    assert r.prefill_tokens_per_s == 0.0 and r.decode_tokens_per_s == pytest.approx(40.0)
    assert w.rates(now=100.0).num_steps == 0


def test_step_totals_only_add_up() -> None:
    totals = StepTotals()
    totals.record(0.5, 0.25)
    totals.record(0.25, 0.25)
    assert (totals.num_steps, totals.seconds, totals.cpu_seconds) == (2, 0.75, 0.5)
