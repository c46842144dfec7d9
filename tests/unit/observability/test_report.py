"""Report numbers from rollups: totals, savings, route split, percentiles, the TTFT fit, daily cost."""
from __future__ import annotations

import pytest

from observability.report import HostedCost, build_report, parse_since, quantile
from observability.rollups import LATENCY_BOUNDS_S, Rollup, latency_bucket, rollups_for
from tests.unit.observability.conftest import T0, record


def _rollups(records: list) -> list[Rollup]:
    return [Rollup(team, period, start, fields)
            for (team, period, start), fields in rollups_for(records).items() if period == "day"]


def _price(model: str, prompt: int, completion: int) -> HostedCost | None:
    if model != "gpt-4o-mini":
        return None
    return HostedCost(prompt * 1e-6 + completion * 4e-6, "hosted/gpt-4o-mini $1 in, $4 out per Mtok (policy)")


def test_totals_route_split_and_savings() -> None:
    hosted = [record(backend="openai", model_alias="gpt-4o-mini", prompt_tokens=1000, completion_tokens=100,
                     cost_usd=0.0014) for _ in range(3)]
    local = [record(backend="local", model_alias="gpt-4o-mini", prompt_tokens=2000, completion_tokens=50,
                    cost_usd=0.0) for _ in range(5)]
    odd = [record(backend="local", model_alias="house-model", prompt_tokens=10, completion_tokens=10, cost_usd=0.0005)]
    report = build_report(_rollups(hosted + local + odd), team="alpha", since=T0, until=T0 + 86400,
                          hosted_price=_price)
    assert report.requests == 9
    assert report.prompt_tokens == 3 * 1000 + 5 * 2000 + 10
    assert report.completion_tokens == 3 * 100 + 5 * 50 + 10
    assert report.cost_usd == pytest.approx(3 * 0.0014 + 0.0005)
    # all-hosted: gpt-4o-mini traffic at its hosted price, the unpriced model at what it cost
    all_hosted = (13_000 * 1e-6 + 550 * 4e-6) + 0.0005
    assert report.hosted_cost_usd == pytest.approx(all_hosted)
    assert report.savings_usd == pytest.approx(all_hosted - report.cost_usd)
    assert report.unpriced_models == ("house-model",)
    assert report.hosted_prices == {"gpt-4o-mini": "hosted/gpt-4o-mini $1 in, $4 out per Mtok (policy)"}
    split = {b.backend: (b.requests, round(b.share, 4)) for b in report.backends}
    assert split == {"local": (6, round(6 / 9, 4)), "openai": (3, round(3 / 9, 4))}
    assert [m.model for m in report.models] == ["gpt-4o-mini", "house-model"]


def test_no_price_function_means_no_savings_claim() -> None:
    report = build_report(_rollups([record()]), team="alpha", since=T0, until=T0 + 1)
    assert report.hosted_cost_usd is None and report.savings_usd is None


def test_percentiles_fall_in_the_right_bucket() -> None:
    ttfts = [0.010] * 50 + [0.100] * 45 + [2.0] * 5
    report = build_report(_rollups([record(ttft_s=t) for t in ttfts]), team="a", since=T0, until=T0 + 1)
    for q, truth in ((report.ttft.p50, 0.010), (report.ttft.p90, 0.100), (report.ttft.p99, 2.0)):
        upper = LATENCY_BOUNDS_S[latency_bucket(truth)]
        lower = LATENCY_BOUNDS_S[latency_bucket(truth) - 1]
        assert q is not None and lower <= q <= upper
    assert report.ttft.count == 100


def test_quantile_of_empty_and_overflow_histograms() -> None:
    assert quantile([0, 0, 0], 0.5) is None
    counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
    counts[-1] = 3
    assert quantile(counts, 0.5) == LATENCY_BOUNDS_S[-1]


def test_ttft_fit_recovers_a_linear_prefill_cost() -> None:
    # TTFT = 20 ms + 0.05 ms per input token, exactly
    records = [record(prompt_tokens=n, ttft_s=0.020 + 0.00005 * n) for n in (100, 400, 900, 1600, 3000)]
    report = build_report(_rollups(records), team="a", since=T0, until=T0 + 1, records=records)
    assert report.ttft_fit is not None
    assert report.ttft_fit.slope_s_per_token == pytest.approx(0.00005)
    assert report.ttft_fit.intercept_s == pytest.approx(0.020)
    assert sorted(report.ttft_points) == sorted((r.prompt_tokens, r.ttft_s) for r in records)


def test_daily_cost_by_backend_and_errors() -> None:
    records = [record(time=T0, backend="openai", cost_usd=0.5), record(time=T0 + 86400, backend="openai", cost_usd=0.25),
               record(time=T0 + 86400, backend="local", cost_usd=0.0, status="error", error_type="engine_full")]
    report = build_report(_rollups(records), team="a", since=T0, until=T0 + 2 * 86400)
    assert [(day, dict(per)) for day, per in report.daily_cost] == [
        ("2026-11-18", {"openai": 0.5}), ("2026-11-19", {"local": 0.0, "openai": 0.25})]
    assert report.errors == {"engine_full": 1}
    assert report.statuses == {"ok": 2, "error": 1}


@pytest.mark.parametrize("text,seconds", [("7d", 604800), ("12h", 43200), ("30m", 1800), ("2w", 1209600), ("90s", 90)])
def test_parse_since(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d7", "-1d", "7y"])
def test_parse_since_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_since(text)
