"""The replay's outputs: a side-by-side terminal table, JSON, and a self-contained HTML what-if report."""
from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from policies.replay.outcome import Summary
from policies.replay.plots import bars, lines


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}s"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


# Refusals by the team's or key's limits (policies/replay/budgets.py), each on a row of its own.
_LIMITS = (("budget", "budget"), ("rate_limit", "rate limit"))


def _rows(summary: Summary) -> list[tuple[str, str]]:
    vs = summary.total_cost_usd / summary.all_hosted_cost_usd if summary.all_hosted_cost_usd else None
    shares = ", ".join(f"{b} {_pct(summary.share(b))}" for b in sorted(summary.served_by)) or "-"
    refused = sum(summary.refused.values())
    why = ", ".join(f"{k} {v}" for k, v in sorted(summary.refused.items()))
    slo = f"{_pct(summary.slo_attainment)} (≤ {_s(summary.ttft_slo_s)})" if summary.ttft_slo_s else \
        _pct(summary.slo_attainment) + (" (per team)" if summary.slo_attainment is not None else "")
    return [
        ("requests", str(summary.requests)),
        ("cost total", _usd(summary.total_cost_usd)),
        ("  hosted / local", f"{_usd(summary.hosted_cost_usd)} / {_usd(summary.local_cost_usd)}"),
        ("  vs all-hosted", f"{_usd(summary.all_hosted_cost_usd)} ({_pct(vs)})"),
        ("served by", shares),
        ("refused", f"{refused}" + (f" ({why})" if why else "")),
        *[(f"  refused by {label}", str(summary.refused[code])) for code, label in _LIMITS if summary.refused.get(code)],
        *([("  over budget, routed", str(summary.over_budget_routed))] if summary.over_budget_routed else []),
        ("TTFT p50 / p95 / p99", " / ".join(_s(summary.ttft_s[k]) for k in ("p50", "p95", "p99"))),
        ("E2E p50 / p95 / p99", " / ".join(_s(summary.e2e_s[k]) for k in ("p50", "p95", "p99"))),
        ("TTFT-SLO attainment", slo),
        *[(f"{n}: KV peak / queue peak", f"{_pct(max(s.kv_occupancy, default=0.0))} / {max(s.queue, default=0)}")
          for n, s in sorted(summary.engines.items())],
        *[(f"{n}: busy", _pct(u)) for n, u in sorted(summary.engine_utilisation.items())],
    ]


def table(summaries: Sequence[Summary]) -> str:
    """Policies side by side, one column each."""
    columns = [[("policy", s.policy), *_rows(s)] for s in summaries]
    labels = [label for label, _ in columns[0]]
    for col in columns[1:]:  # engines may differ between policies
        labels += [label for label, _ in col if label not in labels]
    cells = [dict(col) for col in columns]
    widths = [max(len(label) for label in labels)] + [max(len(c.get(label, "")) for label in labels) for c in cells]
    out = []
    for label in labels:
        row = [label.ljust(widths[0])] + [c.get(label, "").ljust(w) for c, w in zip(cells, widths[1:])]
        out.append("  ".join(row).rstrip())
        if label == "policy":
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def to_json(summaries: Sequence[Summary], meta: Mapping[str, Any]) -> str:
    return json.dumps({"meta": dict(meta), "policies": [asdict(s) | {"total_cost_usd": s.total_cost_usd}
                                                         for s in summaries]}, indent=2)


def report_html(summaries: Sequence[Summary], meta: Mapping[str, Any]) -> str:
    """One page, no scripts, no external files: the table and the plots as inline SVG."""
    names = [s.policy for s in summaries]
    cost = bars("Cost per policy (USD)", [(s.policy, [("hosted", s.hosted_cost_usd), ("local", s.local_cost_usd)])
                                          for s in summaries], "${:.3g}")
    slo = bars("TTFT-SLO attainment", [(s.policy, [("met", s.slo_attainment)] if s.slo_attainment is not None else [])
                                       for s in summaries], "{:.1%}")
    plots = [cost, slo]
    for s in summaries:
        plots.append(lines(f"{s.policy}: requests served per bucket by backend", s.bucket_s,
                           {b: [float(v) for v in vals] for b, vals in s.served_over_time.items()}, "{:.0f}"))
        if s.engines:
            plots.append(lines(f"{s.policy}: local KV occupancy", s.bucket_s,
                               {n: list(e.kv_occupancy) for n, e in s.engines.items()}, "{:.0%}"))
            plots.append(lines(f"{s.policy}: local queue (max waiting)", s.bucket_s,
                               {n: [float(q) for q in e.queue] for n, e in s.engines.items()}, "{:.0f}"))
    info = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in meta.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>hybridgw replay: {html.escape(', '.join(names))}"
            "</title><style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}"
            "svg{margin:1em 0;display:block}</style></head><body>"
            f"<h1>What-if replay</h1><ul>{info}</ul><pre>{html.escape(table(summaries))}</pre>"
            + "".join(plots) + "<p>Model assumptions and limits: docs/replay.md.</p></body></html>")
