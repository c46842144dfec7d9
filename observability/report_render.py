"""Render a Report as a text table, JSON, CSV (long format: section,name,metric,value) or one
self-contained HTML file with inline SVG plots (no scripts, no external CSS or fonts)."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from observability import svg_plots
from observability.report import Percentiles, Report

FORMATS = ("table", "json", "csv", "html")


def render(report: Report, fmt: str) -> str:
    renderers = {"table": render_table, "json": render_json, "csv": render_csv, "html": render_html}
    if fmt not in renderers:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    return renderers[fmt](report)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f} ms"


def _pct_line(name: str, p: Percentiles) -> str:
    return f"{name:<6} p50 {_ms(p.p50):>10}  p90 {_ms(p.p90):>10}  p95 {_ms(p.p95):>10}  p99 {_ms(p.p99):>10}  (n={p.count})"


def _usd(v: float | None) -> str:
    return "-" if v is None else f"${v:.4f}"


def _savings(r: Report) -> str:
    if r.savings_usd is None or not r.hosted_cost_usd:
        return _usd(r.savings_usd)
    return f"{_usd(r.savings_usd)} ({100 * r.savings_usd / r.hosted_cost_usd:.0f}%)"


def _hosted_prices(r: Report) -> list[tuple[str, str]]:
    """(alias, the price its all-hosted cost is at), the unpriced ones (counted at their own cost) last."""
    return [*r.hosted_prices.items(), *((m, "unpriced: counted at its own cost") for m in r.unpriced_models)]


def _shadow_line(r: Report) -> list[str]:
    """The evaluation spend, apart: in the cost above, in no request count, latency or savings."""
    s = r.shadow
    if not s.calls:
        return []
    failed = f", {s.failed} failed" if s.failed else ""
    return [f"  shadow    {_usd(s.cost_usd):>12}   ({s.calls} shadow calls{failed}, tokens {s.prompt_tokens} in "
            f"{s.completion_tokens} out; no requests, latency or savings)"]


def render_table(r: Report) -> str:
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(r.statuses.items())) or "none in this window"
    lines = [
        f"hybridgw usage: team {r.team}, {_when(r.since)} to {_when(r.until)} UTC",
        f"requests    {r.requests:>12}   ({statuses})",
        f"tokens in   {r.prompt_tokens:>12}",
        f"tokens out  {r.completion_tokens:>12}",
        f"cost        {_usd(r.cost_usd):>12}",
        *_shadow_line(r),
        f"all-hosted  {_usd(r.hosted_cost_usd):>12}   savings {_savings(r)}",
        *(f"  {alias} priced as {price}" for alias, price in _hosted_prices(r)),
        "", _pct_line("TTFT", r.ttft), _pct_line("ITL", r.itl), _pct_line("E2E", r.e2e), "",
        f"{'backend':<24}{'requests':>10}{'share':>8}{'tok in':>12}{'tok out':>12}{'cost $':>12}{'e2e p50':>12}"
        f"{'shadow $':>12}",
    ]
    for b in r.backends:
        shadow = f"{b.shadow_cost_usd:.4f}" if b.shadow_calls else "-"
        lines.append(f"{b.backend:<24}{b.requests:>10}{b.share:>8.1%}{b.prompt_tokens:>12}{b.completion_tokens:>12}"
                     f"{b.cost_usd:>12.4f}{_ms(b.e2e.p50 if b.e2e else None):>12}{shadow:>12}")
    lines += ["", f"{'model':<24}{'requests':>10}{'tok in':>12}{'tok out':>12}{'cost $':>12}{'hosted $':>12}"]
    for m in r.models:
        hosted = "-" if m.hosted_cost_usd is None else f"{m.hosted_cost_usd:.4f}"
        lines.append(f"{m.model:<24}{m.requests:>10}{m.prompt_tokens:>12}{m.completion_tokens:>12}"
                     f"{m.cost_usd:>12.4f}{hosted:>12}")
    if r.errors:
        lines += ["", "errors: " + ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items()))]
    return "\n".join(lines) + "\n"


def render_json(r: Report) -> str:
    return json.dumps(r.to_dict(), indent=2, sort_keys=True) + "\n"


def _csv_rows(r: Report) -> list[tuple[str, str, str, object]]:
    rows: list[tuple[str, str, str, object]] = [
        ("total", r.team, name, getattr(r, name))
        for name in ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "hosted_cost_usd", "savings_usd")
    ]
    for name, p in (("ttft", r.ttft), ("itl", r.itl), ("e2e", r.e2e)):
        rows += [("latency_s", name, q, getattr(p, q)) for q in ("p50", "p90", "p95", "p99")]
    for b in r.backends:
        rows += [("backend", b.backend, k, getattr(b, k))
                 for k in ("requests", "share", "prompt_tokens", "completion_tokens", "cost_usd", "shadow_calls",
                           "shadow_cost_usd")]
    rows += [("shadow", r.team, k, getattr(r.shadow, k))
             for k in ("calls", "failed", "prompt_tokens", "completion_tokens", "cost_usd")]
    for m in r.models:
        rows += [("model", m.model, k, getattr(m, k))
                 for k in ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "hosted_cost_usd")]
    rows += [("hosted_price", alias, "price", price) for alias, price in _hosted_prices(r)]
    rows += [("status", k, "requests", v) for k, v in sorted(r.statuses.items())]
    rows += [("error", k, "requests", v) for k, v in sorted(r.errors.items())]
    return rows


def render_csv(r: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("section", "name", "metric", "value"))
    writer.writerows(("" if v is None else v for v in row) for row in _csv_rows(r))
    return out.getvalue()


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}
table{border-collapse:collapse;margin:8px 0 20px}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}.plots{display:flex;flex-wrap:wrap;gap:16px}
svg.plot{border:1px solid #ddd;background:#fff}svg text{font-size:11px;fill:#333}svg .ptitle{font-size:13px;font-weight:600}
svg .axis{stroke:#555}svg .point{fill:#4e79a7;fill-opacity:.6}svg .fit{stroke:#e15759;stroke-width:2}
svg .series{stroke:#4e79a7;stroke-width:2}svg .whisker,svg .median{stroke:#222;stroke-width:1.5}
svg text.count{font-size:10px}svg .scale{stroke:#999;stroke-width:.5}
"""


def _table(headers: tuple[str, ...], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _n(v: int) -> str:
    return f"{v:,}"  # 891,761: counts a person reads at a glance


def _summary(r: Report) -> str:
    rows: list[tuple[object, ...]] = [
        ("requests", _n(r.requests)), ("tokens in", _n(r.prompt_tokens)), ("tokens out", _n(r.completion_tokens)),
        ("cost", _usd(r.cost_usd)),
    ]
    if r.shadow.calls:  # evaluation spend: in the cost, in nothing else
        rows.append(("shadow spend (in the cost)", f"{_usd(r.shadow.cost_usd)} · {_n(r.shadow.calls)} shadow calls"))
    rows += [("all-hosted cost", _usd(r.hosted_cost_usd)), ("savings", _savings(r))]
    rows += [(f"{alias} priced as", price) for alias, price in _hosted_prices(r)]
    rows += [(name, f"p50 {_ms(p.p50)} · p90 {_ms(p.p90)} · p95 {_ms(p.p95)} · p99 {_ms(p.p99)}")
             for name, p in (("TTFT", r.ttft), ("ITL", r.itl), ("end-to-end", r.e2e))]
    backends = [(b.backend, _n(b.requests), f"{b.share:.1%}", _n(b.prompt_tokens), _n(b.completion_tokens),
                 f"{b.cost_usd:.4f}", f"{b.shadow_cost_usd:.4f}" if b.shadow_calls else "-") for b in r.backends]
    models = [(m.model, _n(m.requests), _n(m.prompt_tokens), _n(m.completion_tokens), f"{m.cost_usd:.4f}",
               "-" if m.hosted_cost_usd is None else f"{m.hosted_cost_usd:.4f}") for m in r.models]
    errors = [(k, _n(v)) for k, v in sorted(r.errors.items())]
    return (_table(("", "value"), rows)
            + "<h2>Route split</h2>" + _table(("backend", "requests", "share", "tok in", "tok out", "cost $", "shadow $"),
                                               backends)
            + "<h2>Top models</h2>" + _table(("model", "requests", "tok in", "tok out", "cost $", "hosted $"), models)
            + ("<h2>Errors</h2>" + _table(("error", "requests"), errors) if errors else ""))


def _max_isl(r: Report) -> float:
    rows = [i for i, row in enumerate(r.isl_osl) if any(row)]
    return float(r.token_edges[min(max(rows) + 1, len(r.token_edges) - 1)]) if rows else 1.0


def render_html(r: Report) -> str:
    plots = (
        svg_plots.heatmap(r.isl_osl, r.token_edges, not_ok=r.requests - r.statuses.get("ok", 0)),
        svg_plots.ttft_scatter(r.ttft_points, r.ttft_fit, _max_isl(r)),
        svg_plots.itl_by_position(r.itl_profile),
        svg_plots.e2e_boxes([(b.backend, b.e2e) for b in r.backends]),
        svg_plots.daily_cost_bars(r.daily_cost),
    )
    title = f"hybridgw usage: team {r.team}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
        f"<p>{_when(r.since)} to {_when(r.until)} UTC</p>{_summary(r)}"
        f'<h2>Plots</h2><div class="plots">{"".join(plots)}</div></body></html>\n'
    )
