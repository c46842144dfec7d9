"""Rollup math: what one record adds, bucket edges, and that rollups merge by plain addition."""
from __future__ import annotations

import random

import pytest

from observability.rollups import (
    LATENCY_BOUNDS_S,
    NANO,
    TOKEN_EDGES,
    grouped,
    histogram,
    is_float_field,
    isl_osl_matrix,
    itl_profile,
    labelled,
    latency_bucket,
    merge_fields,
    period_start,
    position_bucket,
    record_fields,
    rollups_for,
    token_bucket,
)
from tests.unit.observability.conftest import T0, record


def test_one_record_adds_its_tokens_cost_and_route() -> None:
    fields = record_fields(record(prompt_tokens=300, completion_tokens=40, cost_usd=0.0123, backend="local"))
    assert fields["requests"] == 1
    assert fields["prompt_tokens"] == 300 and fields["completion_tokens"] == 40
    assert fields["cost_nusd"] == 12_300_000
    assert grouped(fields, "backend") == {
        "local": {"requests": 1, "prompt_tokens": 300, "completion_tokens": 40, "cost_nusd": 12_300_000}
    }
    assert labelled(fields, "status") == {"ok": 1}
    assert labelled(fields, "err") == {}


def test_failed_record_counts_as_error_by_type() -> None:
    fields = record_fields(record(status="error", error_type="upstream_timeout", ttft_s=None, itl_gaps_s=()))
    assert labelled(fields, "err") == {"upstream_timeout": 1}
    assert sum(histogram(fields, "ttft")) == 0
    assert sum(histogram(fields, "e2e")) == 1


def test_latency_buckets_put_a_bound_in_its_own_bucket() -> None:
    assert LATENCY_BOUNDS_S[0] == 0.001 and LATENCY_BOUNDS_S[-1] == 1000.0
    assert latency_bucket(0.0005) == 0
    assert latency_bucket(0.001) == 0
    assert latency_bucket(0.0011) == 1
    assert latency_bucket(5000.0) == len(LATENCY_BOUNDS_S)  # overflow bucket


def test_token_and_position_buckets() -> None:
    assert token_bucket(0) == 0 and token_bucket(15) == 0 and token_bucket(16) == 1
    assert token_bucket(1024) == TOKEN_EDGES.index(1024)
    assert token_bucket(10**9) == len(TOKEN_EDGES) - 1
    assert [position_bucket(p) for p in (1, 2, 3, 4, 7, 8)] == [0, 1, 1, 2, 2, 3]


def test_every_gap_lands_in_the_itl_histogram_and_position_profile() -> None:
    gaps = tuple(0.01 * (k + 1) for k in range(7))  # gaps before output tokens 2..8
    fields = record_fields(record(itl_gaps_s=gaps, completion_tokens=8))
    assert sum(histogram(fields, "itl")) == 7
    profile = itl_profile(fields)
    assert [(pos, n) for pos, _, n in profile] == [(1, 1), (2, 2), (4, 4)]
    assert abs(profile[2][1] - (0.04 + 0.05 + 0.06 + 0.07) / 4) < 1e-9


def test_isl_osl_matrix_counts_requests() -> None:
    fields = merge_fields(record_fields(record(prompt_tokens=p, completion_tokens=c))
                          for p, c in ((20, 5), (20, 6), (3000, 300)))
    matrix = isl_osl_matrix(fields)
    assert matrix[token_bucket(20)][token_bucket(5)] == 2
    assert matrix[token_bucket(3000)][token_bucket(300)] == 1
    assert sum(map(sum, matrix)) == 3


def test_isl_osl_matrix_leaves_failed_requests_out() -> None:
    failed = record(prompt_tokens=20, completion_tokens=0, status="error", error_type="upstream_timeout",
                    ttft_s=None, itl_gaps_s=())
    fields = merge_fields(record_fields(r) for r in (failed, record(prompt_tokens=20, completion_tokens=40)))
    matrix = isl_osl_matrix(fields)
    assert sum(map(sum, matrix)) == 1 and matrix[token_bucket(20)][token_bucket(0)] == 0
    assert labelled(fields, "status") == {"error": 1, "ok": 1}


def test_rollups_split_by_hour_and_day_and_merge_by_addition() -> None:
    rng = random.Random(7)
    records = [record(time=T0 + rng.uniform(0, 2 * 86400), team=rng.choice(["a", "b"]),
                      prompt_tokens=rng.randint(1, 5000), completion_tokens=rng.randint(0, 900),
                      cost_usd=rng.uniform(0, 0.01), backend=rng.choice(["x", "y"])) for _ in range(400)]
    whole = rollups_for(records)
    halves = [rollups_for(records[:150]), rollups_for(records[150:])]
    for key, expected in whole.items():
        merged = merge_fields(h.get(key, {}) for h in halves)
        assert merged.keys() == expected.keys()
        for name, value in expected.items():
            if is_float_field(name):  # fit statistics are floats: equal up to summation order
                assert merged[name] == pytest.approx(value)
            else:
                assert merged[name] == value, name
    days = {k: v for k, v in whole.items() if k[1] == "day"}
    hours = {k: v for k, v in whole.items() if k[1] == "hour"}
    for fields in (merge_fields(days.values()), merge_fields(hours.values())):
        assert fields["requests"] == 400
        assert fields["prompt_tokens"] == sum(r.prompt_tokens for r in records)
        assert fields["cost_nusd"] == sum(round(r.cost_usd * NANO) for r in records)
    assert all(start == period_start(start, "hour") for (_, period, start) in hours)
    assert all(start % 86400 == 0 for (_, _, start) in days)
