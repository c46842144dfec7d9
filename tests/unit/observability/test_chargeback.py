"""Chargeback from a real SQLite usage store: one row per team whose columns sum to the all-teams
totals (also in the wide CSV), hosted vs local $ split by the policy's local backends, the all-hosted
counterfactual with the price it used, errors apart from latency, per-key and per-tag rows, and each
team's budget status with a forecast to the end of the day."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from observability.chargeback import ChargebackPolicy, forecast
from observability.chargeback_render import render_chargeback
from observability.chargeback_source import fetch_chargeback
from observability.report import HostedCost
from observability.report_source import fetch_report
from observability.sqlite_store import SqliteStore
from tests.unit.observability.conftest import T0, record

POLICY = ChargebackPolicy(frozenset({"engine"}), {"engine": "$2/GPU-hour ÷ measured tokens/s (policy)"},
                          {"alpha": (1.0, None)})
NOW = T0 + 3600


def _hosted(alias: str, prompt: int, completion: int) -> HostedCost:
    return HostedCost((prompt + completion) * 1e-6, f"up/{alias} $1 in, $1 out per Mtok (policy)")


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "usage.sqlite3")
    records = [
        record(team="alpha", key_id="ka", backend="engine", cost_usd=0.001, tags={"project": "x"}),
        record(team="alpha", key_id="ka", backend="openai", cost_usd=0.004, tags={"project": "x", "env": "ci"}),
        record(team="alpha", key_id="kb", backend="openai", cost_usd=0.002, status="error", ttft_s=None, e2e_s=9.0),
        record(team="beta", key_id="kc", backend="engine", cost_usd=0.0005, prompt_tokens=10, completion_tokens=5),
        record(team="beta", key_id="kc", backend="", cost_usd=0.0, status="rejected", ttft_s=None),
    ]
    assert s.write_batch(records) == len(records)
    return s


def test_team_rows_sum_to_the_totals_in_json_and_csv(store: SqliteStore) -> None:
    result = fetch_chargeback(store, group="team", team=None, since_s=86400, now=NOW, policy=POLICY,
                              hosted_price=_hosted)
    overall = fetch_report(store, team=None, since_s=86400, now=NOW)
    assert [r.name for r in result.rows] == ["alpha", "beta"]  # most spend first
    assert result.total.requests == overall.requests == 5
    assert result.total.cost_usd == pytest.approx(overall.cost_usd)
    rows = list(csv.DictReader(io.StringIO(render_chargeback(result, "csv"))))
    assert len(rows) == 2 and "total" not in [r["name"] for r in rows]
    for column, expected in (("requests", overall.requests), ("cost_usd", overall.cost_usd),
                             ("prompt_tokens", overall.prompt_tokens), ("completion_tokens", overall.completion_tokens)):
        assert sum(float(r[column]) for r in rows) == pytest.approx(expected), column
    alpha = result.rows[0]
    assert (alpha.local_usd, alpha.hosted_usd) == (pytest.approx(0.001), pytest.approx(0.006))
    assert alpha.share_local == pytest.approx(1 / 3) and alpha.errors == 1
    assert alpha.all_hosted_usd == pytest.approx(3 * 120e-6) and "up/gpt-4o-mini" in alpha.price_used
    assert "GPU-hour" in alpha.price_used
    assert result.rows[1].rejected == 1 and result.rows[1].budget_day is None


def test_budget_status_forecasts_the_day_at_its_pace(store: SqliteStore) -> None:
    alpha = fetch_chargeback(store, group="team", team="alpha", since_s=86400, now=NOW, policy=POLICY).rows[0]
    assert alpha.budget_day is not None and alpha.budget_month is None
    assert alpha.budget_day.spent_usd == pytest.approx(0.007) and alpha.budget_day.limit_usd == 1.0
    day_start = NOW // 86400 * 86400
    assert alpha.budget_day.forecast_usd == pytest.approx(0.007 * 86400 / (NOW - day_start))
    assert forecast(5.0, 0, 100, 200) == 5.0  # a window that is over is what it spent
    table = render_chargeback(fetch_chargeback(store, group="team", team=None, since_s=86400, now=NOW,
                                               policy=POLICY), "table")
    assert "alpha today: spent $0.0070 of $1.0000" in table


def test_key_and_tag_rows_come_from_the_records(store: SqliteStore) -> None:
    keys = fetch_chargeback(store, group="key", team="alpha", since_s=86400, now=NOW, policy=POLICY,
                            hosted_price=_hosted)
    assert {r.name: r.requests for r in keys.rows} == {"ka": 2, "kb": 1}
    ka = next(r for r in keys.rows if r.name == "ka")
    assert ka.share_local == 0.5 and ka.cost_usd == pytest.approx(0.005) and ka.ttft_p50_s == 0.05
    assert ka.itl_p50_s is not None and ka.itl_p95_s is not None and ka.itl_p50_s <= ka.itl_p95_s
    kb = next(r for r in keys.rows if r.name == "kb")
    assert kb.errors == 1 and kb.e2e_p95_s is None  # a failed request's latency is not in the percentiles
    assert keys.total.requests == 3 and not keys.truncated
    tags = fetch_chargeback(store, group="tag", team=None, since_s=86400, now=NOW, policy=POLICY)
    assert {r.name: r.requests for r in tags.rows} == {"project=x": 2, "env=ci": 1}
    assert tags.total.requests == 5
    assert fetch_chargeback(store, group="key", team=None, since_s=86400, now=NOW, policy=POLICY,
                            record_limit=2).truncated
    with pytest.raises(ValueError):
        fetch_chargeback(store, group="model", team=None, since_s=60, now=NOW, policy=POLICY)
