"""Rendering: the numbers show up in every format and the HTML is one self-contained file."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest

from observability.report import HostedCost, Report, build_report
from observability.report_render import render
from observability.rollups import Rollup, rollups_for
from tests.unit.observability.conftest import T0, record


@pytest.fixture
def report() -> Report:
    records = [record(backend=b, prompt_tokens=p, completion_tokens=c, cost_usd=cost, ttft_s=0.01 + p * 1e-5,
                      itl_gaps_s=tuple(0.01 for _ in range(c - 1)), time=T0 + day * 86400)
               for day, (b, p, c, cost) in enumerate([("openai", 1200, 40, 0.002), ("local", 300, 12, 0.0),
                                                      ("openai", 5000, 300, 0.009)])]
    rollups = [Rollup(t, p, s, f) for (t, p, s), f in rollups_for(records).items() if p == "day"]
    return build_report(rollups, team="alpha", since=T0, until=T0 + 3 * 86400,
                        hosted_price=lambda m, p, c: HostedCost(p * 2e-6 + c * 8e-6, "up/big $2 in, $8 out per Mtok (policy)"),
                        records=records)


def test_table_shows_totals_and_route_split(report: Report) -> None:
    text = render(report, "table")
    assert "team alpha" in text
    assert re.search(r"requests\s+3\b", text)
    assert re.search(r"tokens in\s+6500\b", text)
    assert "$0.0110" in text
    assert re.search(r"^openai\s+2\s+66\.7%", text, re.MULTILINE)


def test_a_window_without_requests_says_so() -> None:
    empty = build_report([], team="nosuch", since=T0, until=T0 + 86400)
    assert re.search(r"^requests\s+0\s+\(none in this window\)$", render(empty, "table"), re.MULTILINE)


def test_json_round_trips_the_report(report: Report) -> None:
    data = json.loads(render(report, "json"))
    assert data["requests"] == 3 and data["completion_tokens"] == 352
    assert data["savings_usd"] == pytest.approx(report.savings_usd)
    assert len(data["daily_cost"]) == 3


def test_csv_is_long_format(report: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    values = {(r["section"], r["name"], r["metric"]): r["value"] for r in rows}
    assert values[("total", "alpha", "requests")] == "3"
    assert values[("backend", "local", "prompt_tokens")] == "300"
    assert float(values[("total", "alpha", "hosted_cost_usd")]) == pytest.approx(report.hosted_cost_usd)


def test_html_is_self_contained_with_all_five_plots(report: Report) -> None:
    html = render(report, "html")
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"(src|href)=", html)
    for plot_id in ("plot-isl-osl", "plot-ttft-isl", "plot-itl-position", "plot-e2e-box", "plot-daily-cost"):
        assert f'id="{plot_id}"' in html
    assert html.count('class="cell"') >= 1 and html.count('class="bar"') == 3  # three days, one backend each
    assert 'class="fit"' in html


def test_empty_report_renders_placeholders() -> None:
    empty = build_report([], team="nobody", since=T0, until=T0 + 60)
    html = render(empty, "html")
    assert html.count("no data in this period") == 5
    assert "requests" in render(empty, "table")


def test_unknown_format_is_refused(report: Report) -> None:
    with pytest.raises(ValueError):
        render(report, "pdf")


def test_every_format_names_the_hosted_price_used(report: Report) -> None:
    label = "up/big $2 in, $8 out per Mtok (policy)"
    alias = report.models[0].model
    assert f"{alias} priced as {label}" in render(report, "table")
    assert json.loads(render(report, "json"))["hosted_prices"] == {alias: label}
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert {(r["name"], r["value"]) for r in rows if r["section"] == "hosted_price"} == {(alias, label)}
    assert f"<td>{alias} priced as</td><td>{label}</td>" in render(report, "html")
