"""Read a chargeback from a usage store: team rows from each team's rollups (exact at any volume) with
its budget status (today's and this month's day rollups), key and tag rows from the window's raw
records (the newest `record_limit`; `truncated` says when there were more)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from observability.chargeback import (
    GROUPS,
    BudgetStatus,
    ChargebackPolicy,
    ChargeRow,
    forecast,
    record_rows,
    team_row,
    totals,
)
from observability.limits import window
from observability.report import HostedPrice
from observability.report_source import fetch_report
from observability.rollups import NANO, merge_fields
from observability.stores import UsageStore

RECORD_LIMIT = 100_000


@dataclass(frozen=True)
class Chargeback:
    group: str
    team: str | None  # the one team asked for, None for all
    since: float
    until: float
    rows: tuple[ChargeRow, ...]
    total: ChargeRow
    truncated: bool = False  # key / tag rows: the window held more records than were read

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k not in ("rows", "total")},
                "rows": [r.flat() for r in self.rows], "total": self.total.flat()}


def _spent(store: UsageStore, team: str, start: float, now: float) -> float:
    return merge_fields(r.fields for r in store.rollups(team, "day", start, now)).get("cost_nusd", 0) / NANO


def budget_status(store: UsageStore, team: str, now: float,
                  policy: ChargebackPolicy) -> tuple[BudgetStatus | None, BudgetStatus | None]:
    """The team's spend today and this month (UTC, the limiter's windows), its limits and forecasts.
    Nothing for a team with no budget in the policy."""
    day_limit, month_limit = policy.budgets.get(team, (None, None))
    out: list[BudgetStatus | None] = []
    for name, limit in (("usd_per_day", day_limit), ("usd_per_month", month_limit)):
        if limit is None:
            out.append(None)
            continue
        start, end = window(name, now)
        spent = _spent(store, team, start, now)
        out.append(BudgetStatus(spent, limit, forecast(spent, start, end, now)))
    return out[0], out[1]


def fetch_chargeback(store: UsageStore, *, group: str, team: str | None, since_s: float, now: float,
                     policy: ChargebackPolicy, hosted_price: HostedPrice | None = None,
                     record_limit: int = RECORD_LIMIT) -> Chargeback:
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}, not {group[:20]!r}")
    if group == "team":
        rows, since = [], now - since_s
        for name in [team] if team is not None else store.teams():
            report = fetch_report(store, team=name, since_s=since_s, now=now, hosted_price=hosted_price, max_points=0)
            since = report.since
            if report.requests or name == team:
                rows.append(team_row(report, policy, *budget_status(store, name, now, policy)))
        rows.sort(key=lambda r: (-r.cost_usd, r.name))
        return Chargeback(group, team, since, now, tuple(rows), totals(rows))
    since = now - since_s
    records = store.records(team, since, now, limit=record_limit)
    rows = record_rows(records, group, policy, hosted_price)
    # per tag a request counts once per tag it carries: the total is of the requests, not of the rows
    total = totals(record_rows(records, "key", policy, hosted_price))
    return Chargeback(group, team, since, now, tuple(rows), total, truncated=len(records) >= record_limit)
