"""Shadow calls (rule `shadow`) in the rollups, the report, the chargeback and /metrics: spend, shown
apart, and nothing else — not requests, tokens served, route share, ISL/OSL, latency or savings."""
from __future__ import annotations

from pathlib import Path

import pytest

from observability.chargeback import ChargebackPolicy, record_rows, team_row, to_csv
from observability.metrics import RequestMetrics, build_metrics
from observability.report import HostedCost, build_report
from observability.report_render import render
from observability.rollups import NANO, Rollup, grouped, histogram, isl_osl_matrix, record_fields, rollups_for
from observability.sqlite_store import SqliteStore
from observability.usage import SHADOW_RULE, UsageRecord
from policies.shadow_spec import SHADOW_RULE as POLICY_SHADOW_RULE
from tests.unit.observability.conftest import T0, record

N = 5


def _served(i: int) -> UsageRecord:
    return record(request_id=f"r{i}", backend="weak", model_alias="m", prompt_tokens=100, completion_tokens=10,
                  cost_usd=0.001, ttft_s=0.05, e2e_s=0.2, tags={"project": "x"})


def _shadow(i: int, status: str = "ok") -> UsageRecord:
    # as gateway/shadow_record.py writes it: no TTFT, a slow background E2E, the served request's tags
    return record(request_id=f"r{i}.shadow", backend="strong", model_alias="m", rule=SHADOW_RULE, status=status,
                  prompt_tokens=100, completion_tokens=40 if status == "ok" else 0, cost_usd=0.01, ttft_s=None,
                  itl_p50_s=None, itl_p95_s=None, itl_max_s=None, itl_gaps_s=(), e2e_s=30.0, stream=False,
                  tags={"project": "x", "shadow": "true", "shadow_of": f"r{i}"})


def _records() -> list[UsageRecord]:
    return [_served(i) for i in range(N)] + [_shadow(i) for i in range(N - 1)] + [_shadow(N - 1, "error")]


def _rollups(records: list[UsageRecord]) -> list[Rollup]:
    return [Rollup(team, period, start, fields)
            for (team, period, start), fields in rollups_for(records).items() if period == "day"]


def _price(model: str, prompt: int, completion: int) -> HostedCost:
    return HostedCost((prompt + completion) * 20e-6, "up/m $20 in, $20 out per Mtok (policy)")


HOSTED = N * 110 * 20e-6  # the clients' requests all hosted (what the shadow calls cost is not in it)


def test_one_rule_for_shadow_in_the_ledger_and_the_policy() -> None:
    assert SHADOW_RULE == POLICY_SHADOW_RULE == "shadow" and _shadow(0).is_shadow and not _served(0).is_shadow


def test_a_shadow_record_adds_to_cost_and_its_own_counters_only() -> None:
    fields = record_fields(_shadow(0))
    assert fields["cost_nusd"] == round(0.01 * NANO)  # spend: budgets and the total read it
    assert fields["shadow|calls"] == 1 and fields["shadow|cost_nusd"] == round(0.01 * NANO)
    assert fields["shadow|prompt_tokens"] == 100 and fields["shadow|completion_tokens"] == 40
    assert grouped(fields, "shadow_b") == {"strong": {"calls": 1, "prompt_tokens": 100, "completion_tokens": 40,
                                                      "cost_nusd": round(0.01 * NANO)}}
    for traffic in ("requests", "prompt_tokens", "completion_tokens", "status|ok", "e2e_sum_us"):
        assert traffic not in fields
    assert grouped(fields, "backend") == {} and grouped(fields, "model") == {}
    assert sum(histogram(fields, "e2e")) == 0 and not any(map(any, isl_osl_matrix(fields)))
    assert "shadow|failed" not in fields and record_fields(_shadow(1, "error"))["shadow|failed"] == 1


def test_the_report_counts_requests_not_shadow_calls_and_shows_their_spend_apart() -> None:
    report = build_report(_rollups(_records()), team="alpha", since=T0, until=T0 + 86400, hosted_price=_price,
                          records=_records())
    assert report.requests == N and report.statuses == {"ok": N} and report.errors == {}
    assert (report.prompt_tokens, report.completion_tokens) == (N * 100, N * 10)
    assert report.cost_usd == pytest.approx(N * 0.001 + N * 0.01)  # the team paid for both
    assert report.served_cost_usd == pytest.approx(N * 0.001)
    s = report.shadow
    assert (s.calls, s.failed, s.prompt_tokens, s.completion_tokens) == (N, 1, N * 100, (N - 1) * 40)
    assert s.cost_usd == pytest.approx(N * 0.01)
    # savings compare the clients' traffic with the same traffic all hosted; the shadow spend is apart
    assert report.hosted_cost_usd == pytest.approx(HOSTED)
    assert report.savings_usd == pytest.approx(HOSTED - N * 0.001)
    lines = {b.backend: b for b in report.backends}
    assert (lines["weak"].requests, lines["weak"].share, lines["weak"].shadow_calls) == (N, 1.0, 0)
    assert (lines["strong"].requests, lines["strong"].share, lines["strong"].shadow_calls) == (0, 0.0, N)
    assert lines["strong"].cost_usd == 0 and lines["strong"].shadow_cost_usd == pytest.approx(N * 0.01)
    assert lines["strong"].e2e is None  # a background call's 30 s is no client's latency
    assert report.e2e.count == N and report.e2e.p99 is not None and report.e2e.p99 < 1.0
    assert report.ttft.count == N and len(report.ttft_points) == N
    assert sum(map(sum, report.isl_osl)) == N
    assert [m.requests for m in report.models] == [N]
    day = dict(report.daily_cost[0][1])  # spend by day is spend: the shadow calls' too
    assert day["strong"] == pytest.approx(N * 0.01) and day["weak"] == pytest.approx(N * 0.001)


def test_the_renderings_show_the_shadow_spend() -> None:
    report = build_report(_rollups(_records()), team="alpha", since=T0, until=T0 + 86400)
    table = render(report, "table")
    assert f"requests    {N:>12}" in table and f"({N} shadow calls, 1 failed" in table
    assert "shadow,alpha,calls,5" in render(report, "csv") and "shadow spend" in render(report, "html")
    body = report.to_dict()
    assert body["requests"] == N and body["shadow"]["calls"] == N and "served_cost_usd" in body
    plain = build_report(_rollups([_served(0)]), team="alpha", since=T0, until=T0 + 1)
    assert "shadow calls" not in render(plain, "table") and plain.shadow.calls == 0


def test_chargeback_rows_charge_the_spend_but_count_requests() -> None:
    policy = ChargebackPolicy(local_backends=frozenset({"strong"}))
    report = build_report(_rollups(_records()), team="alpha", since=T0, until=T0 + 86400, hosted_price=_price)
    team = team_row(report, policy)
    assert team.requests == N and team.share_local == 0.0  # no client request ran on the local engine
    assert team.local_usd == pytest.approx(N * 0.01) and team.hosted_usd == pytest.approx(N * 0.001)
    assert (team.shadow_calls, team.shadow_usd) == (N, pytest.approx(N * 0.01))
    (key,) = record_rows(_records(), "key", policy, _price)
    assert (key.requests, key.prompt_tokens, key.share_local, key.errors) == (N, N * 100, 0.0, 0)
    assert key.cost_usd == pytest.approx(team.cost_usd) and key.shadow_usd == pytest.approx(N * 0.01)
    assert key.savings_usd == pytest.approx(team.savings_usd) == pytest.approx(HOSTED - N * 0.001)
    assert key.e2e_p95_s == 0.2
    tags = {r.name: r for r in record_rows(_records(), "tag", policy, _price)}
    assert sorted(tags) == ["project=x", "shadow=true"]  # shadow_of names one request: no row of its own
    assert (tags["shadow=true"].requests, tags["shadow=true"].shadow_calls) == (0, N)
    header, row = to_csv([team]).splitlines()
    assert header.split(",")[-2:] == ["shadow_calls", "shadow_usd"]  # added columns go last
    assert row.split(",")[-2] == str(N)


def test_the_sqlite_store_keeps_them_apart(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "usage.sqlite3")
    assert store.write_batch(_records()) == 2 * N
    (day,) = store.rollups("alpha", "day", T0 - 86400, T0 + 86400)
    assert day.fields["requests"] == N and day.fields["shadow|calls"] == N
    assert day.fields["cost_nusd"] == round(N * 0.001 * NANO) + round(N * 0.01 * NANO)
    store.close()


def test_prometheus_latency_is_the_clients_and_shadow_calls_count_under_their_route() -> None:
    metrics = build_metrics()
    recorder = RequestMetrics(metrics.provider)
    for r in _records():
        recorder.record(r)
    text = metrics.exposition().decode()

    def value(name: str, **labels: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()))

    assert value("gen_ai_server_request_duration_seconds_count") == N  # not the shadow calls' 30 s
    assert value("gen_ai_server_time_to_first_token_seconds_count") == N
    assert value("hybridgw_requests_total", hybridgw_route="shadow") == N  # apart, under their own route
    assert value("hybridgw_cost_usd_total", hybridgw_backend="strong") == pytest.approx(N * 0.01)
