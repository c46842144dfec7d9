"""How many workers `hybridgw serve` runs, and how soon a dead one is started again."""
from __future__ import annotations

import os

import pytest

from gateway.serve_cli import worker_count
from gateway.worker_metrics import merged
from gateway.worker_pool import restart_delay_s


def test_the_flag_wins_then_the_environment_then_one_per_core() -> None:
    assert worker_count(3, {"HYBRIDGW_WORKERS": "5"}) == 3
    assert worker_count(None, {"HYBRIDGW_WORKERS": "5"}) == 5
    assert worker_count(None, {}) == (os.cpu_count() or 1)
    assert worker_count(0, {}) == 1  # at least one
    with pytest.raises(ValueError):
        worker_count(None, {"HYBRIDGW_WORKERS": "many"})


def test_a_worker_that_ran_a_while_restarts_at_once_and_a_crash_loop_backs_off() -> None:
    assert restart_delay_s(0, 10.0) == 0.0
    assert [restart_delay_s(n, 10.0) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert restart_delay_s(20, 10.0) == 10.0


def test_the_workers_metrics_merge_into_one_family_per_name_labelled_by_worker() -> None:
    one = ('# HELP hybridgw_requests_total Requests\n# TYPE hybridgw_requests_total counter\n'
           'hybridgw_requests_total{team="red"} 3.0\n')
    two = one.replace("3.0", "4.0")
    text = merged({0: one, 1: two}).decode()
    assert text.count("# TYPE hybridgw_requests_total counter") == 1  # one family, as Prometheus requires
    assert 'hybridgw_requests_total{team="red",worker="0"} 3.0' in text
    assert 'hybridgw_requests_total{team="red",worker="1"} 4.0' in text
