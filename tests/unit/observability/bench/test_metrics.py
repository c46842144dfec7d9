"""Metric definitions against hand-built timelines: TTFT, ITL, TPOT, E2E, throughput, goodput."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from observability.bench import metrics
from observability.bench.metrics import Slo, summarize
from observability.bench.records import RequestRecord


def rec(index: int, send: float, chunks: tuple[float, ...], end: float, **kw: object) -> RequestRecord:
    values: dict[str, object] = {
        "completion_tokens": len(chunks),
        "prompt_tokens": 100,
        "backend": "local",
        "status": 200,
    }
    values.update(kw)
    return RequestRecord(index, "p", "team", 100, 16, send, end, chunks, **values)  # type: ignore[arg-type]


A = rec(0, 1.0, (1.3, 1.35, 1.45, 1.5), 1.52)


def test_one_timeline_recovers_each_definition() -> None:
    assert metrics.ttft(A) == pytest.approx(0.3)
    assert metrics.itls(A) == pytest.approx([0.05, 0.1, 0.05])
    assert metrics.e2e(A) == pytest.approx(0.52)
    assert metrics.tpot(A) == pytest.approx((0.52 - 0.3) / 3)


def test_tpot_uses_the_servers_token_count_not_the_chunks() -> None:
    # 4 chunks carrying 9 tokens (servers batch tokens into chunks): TPOT divides by 9 - 1
    r = replace(A, completion_tokens=9)
    assert metrics.tpot(r) == pytest.approx(0.22 / 8)
    assert metrics.tpot(replace(A, chunk_s=(1.3,), completion_tokens=1)) is None
    assert replace(A, completion_tokens=None).output_tokens == 4  # no usage: one token per content chunk


def test_itl_is_every_gap_pooled_across_requests() -> None:
    b = rec(1, 2.0, (2.1, 2.4), 2.4)
    s = summarize([A, b])
    assert s.itl is not None and s.itl.count == 4
    assert s.itl.max == pytest.approx(0.3) and s.itl.min == pytest.approx(0.05)
    assert s.itl.mean == pytest.approx((0.05 + 0.1 + 0.05 + 0.3) / 4)


def test_percentiles_match_numpys_linear_interpolation() -> None:
    values = [0.013, 0.5, 0.02, 0.7, 0.1, 0.33, 0.9, 0.011, 0.4]
    st = metrics.stats(values)
    assert st is not None
    for q, got in zip(metrics.QUANTILES, (st.p50, st.p90, st.p95, st.p99)):
        assert got == pytest.approx(float(np.percentile(values, q)))
    assert metrics.stats([]) is None


def test_goodput_counts_only_requests_within_every_slo() -> None:
    fast = rec(0, 0.0, (0.1, 0.2, 0.3), 0.3)
    slow_first = rec(1, 0.0, (0.9, 0.95, 1.0), 1.0)  # TTFT 0.9 breaks a 0.5 s TTFT bound
    slow_tokens = rec(2, 0.0, (0.1, 1.1, 2.1), 2.1)  # TPOT 1.0 breaks a 0.1 s TPOT bound
    failed = rec(3, 0.0, (0.1,), 0.2, error="disconnect")
    s = summarize([fast, slow_first, slow_tokens, failed], Slo(ttft_s=0.5, tpot_s=0.1))
    assert s.duration_s == pytest.approx(2.1)
    assert s.goodput == pytest.approx(1 / 2.1)
    assert s.slo_attainment == pytest.approx(1 / 4)
    only_ttft = summarize([fast, slow_first, slow_tokens, failed], Slo(ttft_s=0.5))
    assert only_ttft.goodput == pytest.approx(2 / 2.1)
    assert summarize([fast], Slo()).goodput is None  # no SLO given: no goodput claimed


def test_summary_leaves_warmup_out_and_counts_errors_and_backends() -> None:
    warm = rec(0, 0.0, (5.0,), 9.0, warmup=True)  # would dominate every number if counted
    ok1 = rec(1, 10.0, (10.2, 10.3), 10.4, backend="local")
    ok2 = rec(2, 10.5, (10.6, 10.7), 11.0, backend="openai")
    ok3 = rec(3, 10.5, (10.6, 10.7), 12.0, backend=None)
    err = rec(4, 11.0, (), 11.1, error="http_429", status=429)
    s = summarize([warm, ok1, ok2, ok3, err])
    assert (s.requests, s.ok) == (4, 3)
    assert s.duration_s == pytest.approx(2.0)
    assert s.request_throughput == pytest.approx(1.5)
    assert s.output_token_throughput == pytest.approx(3.0)
    assert s.errors == {"http_429": 1}
    assert s.backends == pytest.approx({"-": 1 / 3, "local": 1 / 3, "openai": 1 / 3})
    assert s.ttft is not None and s.ttft.max == pytest.approx(0.2)
    assert s.input_tokens == 300


def test_summary_of_nothing_is_zeros_not_a_crash() -> None:
    s = summarize([])
    assert (s.requests, s.ok, s.request_throughput, s.ttft) == (0, 0, 0.0, None)
