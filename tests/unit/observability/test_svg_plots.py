"""The plots read like a chart a person would draw: ticks at round values (never 39334 or 4125.9), the
heat map with its counts in the cells, a colour scale and how many requests failed, totals and n."""
from __future__ import annotations

import re

import pytest

from observability import svg_plots
from observability.report import Box
from observability.svg_plots_frame import BOTTOM, TOP, H, box_plot, nice_ticks, tick_label, xticks, yticks


@pytest.mark.parametrize(("top", "ticks"), [
    (4125.9, [0, 1000, 2000, 3000, 4000]),
    (39334, [0, 10000, 20000, 30000]),
    (0.137, [0, 0.05, 0.1]),
    (1.0, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (7, [0, 2, 4, 6]),
])
def test_ticks_are_round_values_up_to_the_top(top: float, ticks: list[float]) -> None:
    assert nice_ticks(top) == pytest.approx(ticks)


def test_tick_labels_are_short_and_no_longer_than_the_step_needs() -> None:
    assert [tick_label(v, 10000) for v in (0, 10000, 30000)] == ["0", "10k", "30k"]
    assert tick_label(2_500_000, 500_000) == "2.5M"
    assert [tick_label(v, 0.05) for v in (0, 0.05, 0.1)] == ["0.00", "0.05", "0.10"]
    assert tick_label(3 * 0.2, 0.2) == "0.6"  # no 0.6000000000000001


def _labels(svg: str) -> list[str]:
    return re.findall(r'text-anchor="(?:end|middle)">([^<]*)</text>', svg)


def test_axes_show_only_round_tick_labels() -> None:
    assert _labels(yticks(4125.9)) == ["0", "1k", "2k", "3k", "4k"]
    assert _labels(xticks(39334)) == ["0", "10k", "20k", "30k"]


def test_the_heat_map_has_counts_a_colour_scale_and_says_how_many_failed() -> None:
    edges = [0, 16, 32, 64, 128]
    matrix = [[0] * 5 for _ in range(5)]
    matrix[1][2], matrix[2][2], matrix[3][1] = 1500, 7, 3
    svg = svg_plots.heatmap(matrix, edges, not_ok=3)
    assert re.findall(r'class="count"[^>]*>([^<]*)<', svg) == ["1,500", "7", "3"]
    assert 'class="scale"' in svg and 'linearGradient id="heat-ramp"' in svg
    assert re.findall(r'class="scale-tick">([^<]*)<', svg) == ["1", "10", "100", "1,000", "1,500"]
    assert "n = 1,510 completed; 3 failed or refused, not shown" in svg


def test_every_plot_says_how_many_it_shows() -> None:
    assert "n = 2 requests" in svg_plots.ttft_scatter([(100, 0.1), (200, 0.2)], None, 200)
    assert "n = 30 gaps" in svg_plots.itl_by_position([(1, 0.01, 10), (2, 0.012, 20)])
    bars = svg_plots.daily_cost_bars([("2026-03-01", [("a", 1.5), ("b", 0.25)]), ("2026-03-02", [("a", 2.0)])])
    assert re.findall(r'class="total"[^>]*>([^<]*)<', bars) == ["$1.75", "$2"]
    assert bars.count('class="legend"') == 2


def test_a_box_spans_p25_to_p75_its_whiskers_p5_to_p95_on_one_scale_for_all_boxes() -> None:
    low, high = Box(count=4, p5=0.0, p25=0.25, p50=0.5, p75=0.75, p95=1.0), Box(count=9, p5=1, p25=2, p50=2, p75=2, p95=2)
    svg = box_plot("p", "t", [("low <1>", low), ("high", high)], {"low <1>": "#111", "high": "#222"}, ("x", "y"),
                   lambda name, b: f"{name} p50 {b.p50}", lambda name, b: f"{name} n={b.count}")
    top = 2 * 1.1  # the tallest whisker plus a tenth
    y = lambda v: H - BOTTOM - v / top * (H - BOTTOM - TOP)  # noqa: E731
    whiskers = [tuple(float(v) for v in m) for m in re.findall(r'y1="([\d.]+)" x2="[\d.]+" y2="([\d.]+)" class="whisker"', svg)]
    assert whiskers == [(round(y(0.0), 1), round(y(1.0), 1)), (round(y(1), 1), round(y(2), 1))]
    rects = re.findall(r'<rect x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)" fill="(#\d+)"', svg)
    assert [(float(t), float(h), c) for t, h, c in rects][0] == (round(y(0.75), 1), round(y(0.25) - y(0.75), 1), "#111")
    assert float(rects[1][1]) == 1.0  # a box of no height is still drawn one pixel high
    assert "<title>low &lt;1&gt; p50 0.5</title>" in svg and ">low &lt;1&gt; n=4</text>" in svg
    assert "no data in this period" in box_plot("p", "t", [], {}, ("x", "y"), str, str)
