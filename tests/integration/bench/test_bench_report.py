"""The bench's HTML report, from a real run, rendered by headless Chromium with every plot present."""

from __future__ import annotations

from pathlib import Path

from tests.integration.bench.conftest import Scripted, bench, results
from tests.support.chromium import Browser, svg_plots

PLOTS = {"plot-ttft-isl", "plot-itl-position", "plot-isl-osl", "plot-e2e-pattern", "plot-backend-time"}


def test_html_report_renders_every_plot_in_headless_chromium(scripted: Scripted, tmp_path: Path) -> None:
    browser = Browser(tmp_path / "profile")
    done = bench(
        scripted.url,
        "--model",
        "m;ttft_ms=5;itl_ms=1;backends=local,openai",
        "--preset",
        "mixed",
        "--length-scale",
        "0.05",
        "--requests",
        "40",
        "--concurrency",
        "4",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    found = svg_plots(browser.dom(tmp_path / "report.html"))
    assert set(found) == PLOTS
    ok = results(tmp_path)["summary"]["ok"]
    assert found["plot-ttft-isl"].get("circle.point", 0) == ok and found["plot-ttft-isl"].get("line.fit") == 1
    assert found["plot-itl-position"].get("polyline.series") == 1
    assert found["plot-isl-osl"].get("rect.cell", 0) >= 4
    assert found["plot-e2e-pattern"].get("g.box") == 4  # the four query patterns of `mixed`
    assert found["plot-backend-time"].get("rect.bar", 0) >= 2
    assert "<script" not in (tmp_path / "report.html").read_text()  # self-contained: nothing to fetch or run


def test_a_sweep_stops_at_saturation_and_plots_the_load_curves(scripted: Scripted, tmp_path: Path) -> None:
    # Where it stops depends on this machine's load; what must hold does not: every level but the
    # last one is below saturation, each level sent its own 16 requests, and the curves are drawn.
    done = bench(
        scripted.url,
        "--model",
        "m;chunks=4;itl_ms=2",
        "--isl",
        "8",
        "--osl",
        "4",
        "--requests",
        "16",
        "--sweep-concurrency",
        "1,2,4,8",
        "--slo",
        "ttft:60000",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    body = results(tmp_path)
    levels = body["sweep"]
    assert [lv["load"] for lv in levels] == [1.0, 2.0, 4.0, 8.0][: len(levels)] and len(levels) >= 2
    assert all(lv["summary"]["requests"] == 16 for lv in levels)
    assert all(lv["saturated"] is None for lv in levels[:-1])  # it only stops at a saturated level
    html = (tmp_path / "report.html").read_text()
    assert (
        'id="plot-sweep-ttft"' in html and 'id="plot-sweep-throughput"' in html and "<h2>Sweep</h2>" in html
    )
    assert "concurrency" in done.stdout.splitlines()[0]
