"""The bench's self-contained HTML report (inline SVG, no scripts or external assets): settings,
the summary, and the talk's plots — TTFT vs input length with its fitted slope, ITL vs token
position, the ISL×OSL heat map, E2E per pattern, the backend split over time."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from observability import svg_plots
from observability.bench import plots
from observability.bench.metrics import Stats, Summary
from observability.bench.records import RequestRecord
from observability.bench.report_data import report_data
from observability.rollups import TOKEN_EDGES

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}
table{border-collapse:collapse;margin:8px 0 20px}
td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}.plots{display:flex;flex-wrap:wrap;gap:16px}
svg.plot{border:1px solid #ddd;background:#fff}svg text{font-size:11px;fill:#333}
svg .ptitle{font-size:13px;font-weight:600}
svg .axis{stroke:#555}svg .point{fill:#4e79a7;fill-opacity:.6}svg .fit{stroke:#e15759;stroke-width:2}
svg .series{stroke:#4e79a7;stroke-width:2}svg .whisker,svg .median{stroke:#222;stroke-width:1.5}
"""
SETTINGS_SHOWN = (
    "url",
    "model",
    "endpoint",
    "preset",
    "isl",
    "osl",
    "length_scale",
    "tenants",
    "prefix_tokens",
    "ignore_eos",
    "load",
    "requests",
    "warmup",
    "duration",
    "seed",
    "tokenizer",
    "teams",
    "started",
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _ms_row(name: str, s: Stats | None) -> list[object]:
    if s is None:
        return [name, *["-"] * 6, 0]
    return [
        name,
        *(f"{getattr(s, f) * 1000:.1f}" for f in ("mean", "p50", "p90", "p95", "p99", "max")),
        s.count,
    ]


def _summary(s: Summary) -> str:
    rows: list[tuple[object, object]] = [
        ("requests (measured)", s.requests),
        ("ok", s.ok),
        ("duration", f"{s.duration_s:.2f} s"),
        ("request throughput", f"{s.request_throughput:.2f} req/s"),
        ("output-token throughput", f"{s.output_token_throughput:.1f} tok/s"),
        ("tokens in / out", f"{s.input_tokens} / {s.output_tokens}"),
    ]
    if s.goodput is not None:
        rows.append(("goodput (all SLOs met)", f"{s.goodput:.2f} req/s ({s.slo_attainment or 0:.1%})"))
    latency = [
        _ms_row(n, st) for n, st in (("TTFT", s.ttft), ("ITL", s.itl), ("TPOT", s.tpot), ("E2E", s.e2e))
    ]
    html = _table(("", "value"), rows)
    html += _table(("ms", "mean", "p50", "p90", "p95", "p99", "max", "n"), latency)
    html += _table(
        ("pattern", "requests", "TTFT p50 ms", "E2E p50 ms"),
        [(p.pattern, p.requests, _ms_row("", p.ttft)[2], _ms_row("", p.e2e)[2]) for p in s.patterns],
    )
    html += _table(("backend", "share"), [(b, f"{v:.1%}") for b, v in s.backends.items()])
    if s.errors:
        html += "<h2>Errors</h2>" + _table(("error", "requests"), list(s.errors.items()))
    return html


def render_html(
    settings: dict[str, Any],
    summary: Summary,
    records: Sequence[RequestRecord],
    sweep_plots: Sequence[str] = (),
    sweep_table: str = "",
) -> str:
    data = report_data(records)
    max_isl = max((x for x, _ in data.ttft_points), default=1)
    figures = (
        svg_plots.ttft_scatter(data.ttft_points, data.ttft_fit, max_isl),
        svg_plots.itl_by_position(data.itl_profile),
        svg_plots.heatmap(data.isl_osl, TOKEN_EDGES),
        plots.e2e_by_pattern(data.e2e_by_pattern),
        plots.backend_over_time(data.backend_slots),
        *sweep_plots,
    )
    sweep = f"<h2>Sweep</h2><pre>{escape(sweep_table)}</pre>" if sweep_table else ""
    title = f"hybridgw bench: {settings.get('url', '')}"
    shown = [(k, settings[k]) for k in SETTINGS_SHOWN if settings.get(k) not in (None, "", [])]
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
        f"{_table(('setting', 'value'), shown)}{sweep}<h2>Summary</h2>{_summary(summary)}"
        f'<h2>Plots</h2><div class="plots">{"".join(figures)}</div></body></html>\n'
    )
