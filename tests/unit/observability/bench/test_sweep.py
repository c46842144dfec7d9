"""When a sweep level counts as saturated, and the sweep's table and plots."""

from __future__ import annotations

import pytest

from observability.bench.metrics import Slo, summarize
from observability.bench.records import RequestRecord
from observability.bench.sweep import Level, parse_levels, render_sweep_table, saturation, sweep_plots


def run_of(n: int, duration: float, failed: int = 0, ttft: float = 0.05) -> list[RequestRecord]:
    """n requests spread evenly over `duration` seconds, the last `failed` of them failed."""
    out = []
    for i in range(n):
        send = duration * i / n
        end = send + duration / n
        error = "http_503" if i >= n - failed else None
        out.append(RequestRecord(i, "p", "a", 10, 2, send, end, (send + ttft, end), 200, 10, 2, error=error))
    return out


def level(
    load: float, records: list[RequestRecord], previous: Level | None = None, kind: str = "rate"
) -> Level:
    s = summarize(records, Slo(ttft_s=0.1))
    return Level(kind, load, s, saturation(kind, load, s, previous))


def test_a_level_that_keeps_up_is_not_saturated() -> None:
    first = level(10, run_of(100, 10.0))
    assert first.summary.request_throughput == pytest.approx(10.0) and first.saturated is None
    second = level(20, run_of(200, 10.0), first)
    assert second.saturated is None


def test_each_saturation_signal() -> None:
    first = level(10, run_of(100, 10.0))
    assert "served 10.00 req/s of 20 offered" in (level(20, run_of(100, 10.0), first).saturated or "")
    assert "failed" in (level(10, run_of(100, 10.0, failed=10)).saturated or "")
    closed = level(8, run_of(100, 10.0), first, kind="concurrency")
    assert "throughput flat" in (closed.saturated or "")
    slow = level(10, run_of(100, 10.0, ttft=0.5))  # every TTFT above the 100 ms SLO
    assert "within the SLOs" in (slow.saturated or "")


def test_levels_parse_and_render() -> None:
    assert parse_levels("1,2,4.5") == [1.0, 2.0, 4.5]
    for bad in ("", "2,1", "0,1", "1,1"):
        with pytest.raises(ValueError):
            parse_levels(bad)
    levels = [level(10, run_of(100, 10.0)), level(20, run_of(100, 10.0))]
    levels[1] = Level("rate", 20, levels[1].summary, saturation("rate", 20, levels[1].summary, levels[0]))
    table = render_sweep_table(levels)
    assert len(table.splitlines()) == 3 and "saturated: served" in table.splitlines()[2]
    svgs = sweep_plots(levels)
    assert [s.split('id="')[1].split('"')[0] for s in svgs] == ["plot-sweep-ttft", "plot-sweep-throughput"]
    assert svgs[0].count('class="series"') == 3 and svgs[1].count('class="series"') == 2
