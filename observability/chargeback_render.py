"""A chargeback as text: an aligned table (with the totals row and each team's budget status), JSON,
or the wide CSV (one row per team, key or tag; columns that sum)."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from observability.chargeback import ChargeRow, to_csv
from observability.chargeback_source import Chargeback

_HEAD = (f"{'name':<24} {'requests':>8} {'tokens':>10} {'hosted $':>10} {'local $':>10} {'all-hosted $':>12} "
         f"{'savings $':>10} {'local':>6} {'errors':>6} {'TTFT p50/p95 s':>15} {'ITL p50/p95 ms':>15} "
         f"{'E2E p50/p95 s':>14} {'shadow $':>10}")


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _pair(a: float | None, b: float | None, scale: float = 1.0, digits: int = 2) -> str:
    def one(v: float | None) -> str:
        return "-" if v is None else f"{v * scale:.{digits}f}"

    return f"{one(a)}/{one(b)}"


def _line(row: ChargeRow) -> str:
    return (f"{row.name[:24]:<24} {row.requests:>8} {row.prompt_tokens + row.completion_tokens:>10} "
            f"{row.hosted_usd:>10.4f} {row.local_usd:>10.4f} {_money(row.all_hosted_usd):>12} "
            f"{_money(row.savings_usd):>10} {row.share_local:>6.0%} {row.errors:>6} "
            f"{_pair(row.ttft_p50_s, row.ttft_p95_s, digits=3):>15} {_pair(row.itl_p50_s, row.itl_p95_s, 1000, 1):>15} "
            f"{_pair(row.e2e_p50_s, row.e2e_p95_s):>14} {_money(row.shadow_usd if row.shadow_calls else None):>10}")


def _budgets(rows: tuple[ChargeRow, ...]) -> list[str]:
    out = []
    for row in rows:
        for period, status in (("today", row.budget_day), ("this month", row.budget_month)):
            if status is not None and status.limit_usd is not None:
                flag = "  OVER at this pace" if status.forecast_usd > status.limit_usd else ""
                out.append(f"  {row.name} {period}: spent ${status.spent_usd:.4f} of ${status.limit_usd:.4f}, "
                           f"forecast ${status.forecast_usd:.4f}{flag}")
    return ["budgets:", *out] if out else []


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_table(result: Chargeback) -> str:
    lines = [f"chargeback by {result.group}, {_stamp(result.since)} to {_stamp(result.until)}"
             + (f", team {result.team}" if result.team else ""), _HEAD, "-" * len(_HEAD)]
    lines += [_line(row) for row in result.rows]
    lines += ["-" * len(_HEAD), _line(result.total)]
    if result.group == "tag":
        lines.append("(a request with several tags counts in each of their rows; the total counts it once)")
    if any(row.shadow_calls for row in result.rows):
        lines.append("(shadow $: shadow calls' spend, part of hosted $ / local $; they are not counted as requests)")
    if result.truncated:
        lines.append("(more records than were read: key and tag rows cover the newest ones only)")
    prices = sorted({p for row in result.rows for p in row.price_used.split("; ") if p})
    if prices:
        lines += ["prices used:", *(f"  {p}" for p in prices)]
    lines += _budgets(result.rows)
    return "\n".join(lines) + "\n"


def render_chargeback(result: Chargeback, fmt: str) -> str:
    if fmt == "csv":
        return to_csv(result.rows)
    if fmt == "json":
        return json.dumps({"object": "usage.chargeback", **result.to_dict()}, indent=2) + "\n"
    if fmt == "table":
        return render_table(result)
    raise ValueError(f"--by renders as table, json or csv, not {fmt!r}")
