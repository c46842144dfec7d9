"""The numbers behind the report's plots: the fitted TTFT slope, ITL by position, the matrix, time slots."""

from __future__ import annotations

import pytest

from observability.bench.records import RequestRecord
from observability.bench.report_data import backend_slots, fit_line, itl_profile, report_data
from observability.rollups import token_bucket


def rec(
    index: int,
    isl: int,
    ttft: float,
    gaps: tuple[float, ...] = (),
    backend: str = "local",
    send: float = 0.0,
    pattern: str = "p",
) -> RequestRecord:
    chunks, t = [send + ttft], send + ttft
    for g in gaps:
        t += g
        chunks.append(t)
    return RequestRecord(index, pattern, "a", isl, 8, send, t, tuple(chunks), 200, isl, len(chunks), backend)


def test_fit_recovers_an_exact_line() -> None:
    # TTFT = 20 ms + 0.1 ms per input token
    fit = fit_line([(n, 0.02 + 0.0001 * n) for n in (100, 400, 1600, 3000)])
    assert fit is not None and fit.n == 4
    assert fit.slope_s_per_token == pytest.approx(0.0001) and fit.intercept_s == pytest.approx(0.02)
    assert fit_line([(5, 0.1), (5, 0.2)]) is None and fit_line([(1, 0.1)]) is None


def test_itl_profile_buckets_gaps_by_log2_position() -> None:
    r = rec(0, 10, 0.1, gaps=(0.01, 0.02, 0.03, 0.04, 0.05))  # gaps 1..5: buckets 1, 2, 2, 4, 4
    profile = itl_profile([r])
    assert [(pos, n) for pos, _, n in profile] == [(1, 1), (2, 2), (4, 2)]
    assert [mean for _, mean, _ in profile] == pytest.approx([0.01, 0.025, 0.045])


def test_report_data_uses_only_successful_measured_requests() -> None:
    good = [rec(i, 100 * (i + 1), 0.01 * (i + 1), (0.01,), pattern="x" if i % 2 else "y") for i in range(4)]
    failed = RequestRecord(9, "x", "a", 50, 8, 0.0, 1.0, (), 500, error="http_500")
    warm = RequestRecord(8, "x", "a", 50, 8, 0.0, 1.0, (0.5,), 200, warmup=True)
    data = report_data([*good, failed, warm])
    assert len(data.ttft_points) == 4 and data.ttft_fit is not None
    assert data.ttft_fit.slope_s_per_token == pytest.approx(0.0001)
    assert sum(map(sum, data.isl_osl)) == 4 and data.isl_osl[token_bucket(100)][token_bucket(2)] == 1
    assert [name for name, _ in data.e2e_by_pattern] == ["x", "y"]


def test_backend_slots_split_the_run_in_time() -> None:
    records = [rec(i, 10, 0.1, backend="local" if i < 5 else "openai", send=float(i)) for i in range(10)]
    slots = backend_slots(records, slots=2)
    assert [dict(per) for _, per in slots] == [{"local": 5}, {"openai": 5}]
    assert slots[0][0] == 0.0 and slots[1][0] == pytest.approx(4.5)
