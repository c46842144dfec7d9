"""The files a run writes: CSV one row per request, JSON with settings/summary/requests, the table;
and the live progress line."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from observability.bench.metrics import Slo, summarize
from observability.bench.output import Progress, render_csv, render_json, render_table
from observability.bench.records import RequestRecord

RECORDS = [
    RequestRecord(0, "short-in-short-out", "a", 20, 4, 0.0, 0.5, (0.1, 0.2, 0.3, 0.5), 200, 20, 4, "local"),
    RequestRecord(1, "long-in-short-out", "b", 900, 4, 0.2, 1.0, (0.6, 1.0), 200, 900, 2, "openai"),
    RequestRecord(
        2, "long-in-short-out", "b", 900, 4, 0.3, 0.4, (), 401, error="http_401", error_detail="bad key"
    ),
]


def test_csv_has_one_row_per_request_with_derived_times() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(RECORDS))))
    assert [r["index"] for r in rows] == ["0", "1", "2"]
    assert float(rows[0]["ttft_s"]) == pytest.approx(0.1) and float(rows[1]["tpot_s"]) == pytest.approx(0.4)
    assert rows[2]["error"] == "http_401" and rows[2]["ttft_s"] == ""


def test_json_and_table_carry_the_summary() -> None:
    summary = summarize(RECORDS, Slo(ttft_s=0.2))
    body = orjson.loads(render_json({"url": "u"}, summary, RECORDS, None))
    assert body["settings"] == {"url": "u"} and body["stopped"] is None
    assert body["summary"]["errors"] == {"http_401": 1} and len(body["requests"]) == 3
    assert body["requests"][0]["chunk_s"] == [0.1, 0.2, 0.3, 0.5]
    table = render_table(summary)
    assert "3 measured, 2 ok, 1 failed" in table and "http_401 1" in table
    assert "goodput" in table and "local 50.0%, openai 50.0%" in table


def test_progress_line_counts_measured_requests_with_running_ttft_and_errors() -> None:
    out = io.StringIO()  # not a terminal: one line per update, the last one when every request is in
    progress = Progress(3, stream=out)
    progress(RequestRecord(9, "p", "a", 20, 4, 0.0, 0.5, (0.4, 0.5), 200, 20, 2, warmup=True))  # left out
    for r in RECORDS:
        progress(r)
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("[" + "#" * 24 + "] 3/3 ")
    assert "TTFT p50 250 ms" in last and "errors 1" in last  # p50 of 100 and 400 ms; the 401 has none
    assert "req/s" in last and "tok/s" in last
