"""Chargeback: one row per team (from its report's rollups, exact) or per key / per tag (from raw
records, up to a bound) with requests, tokens, hosted $, local $, the all-hosted counterfactual and
the price it used, share local, errors, TTFT/ITL/E2E p50/p95, and each team's budget status
(spent / limit / forecast to the end of the day and month). Shadow calls are spend (hosted $ / local $,
and apart in shadow $) but not requests, tokens, share local, latency or savings. Pure: no I/O, no clock."""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

from observability.report import HostedPrice, Report
from observability.usage import UsageRecord

GROUPS = ("team", "key", "tag")
# Tags that name one request, not a group to charge: a row each would only repeat the shadow row.
UNGROUPED_TAGS = frozenset({"shadow_of"})


@dataclass(frozen=True)
class ChargebackPolicy:
    """What the policy says that the usage store does not: which backends are local (self-hosted
    engines) and at what price, and each team's USD budgets."""

    local_backends: frozenset[str] = frozenset()
    local_prices: Mapping[str, str] = field(default_factory=dict)  # backend → how its $ were priced
    budgets: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)  # team → (day, month)


@dataclass(frozen=True)
class BudgetStatus:
    spent_usd: float  # in the current UTC day / month so far
    limit_usd: float | None
    forecast_usd: float  # at this pace, by the end of the day / month


@dataclass(frozen=True)
class ChargeRow:
    group: str  # "team", "key", "tag"
    name: str  # the team, the key id, or "tag=value"
    requests: int
    prompt_tokens: int
    completion_tokens: int
    hosted_usd: float  # spent on hosted backends
    local_usd: float  # spent on local engines (their policy price: per token or $/GPU-hour)
    all_hosted_usd: float | None  # the same traffic all on hosted APIs (None: no hosted price given)
    savings_usd: float | None
    price_used: str  # the prices the all-hosted and local numbers are at
    share_local: float  # of requests served by local engines
    errors: int  # failed upstream-side (status "error")
    rejected: int  # refused before any upstream (limits, validation)
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    itl_p50_s: float | None = None
    itl_p95_s: float | None = None
    e2e_p50_s: float | None = None
    e2e_p95_s: float | None = None
    budget_day: BudgetStatus | None = None
    budget_month: BudgetStatus | None = None
    shadow_calls: int = 0  # shadow calls (evaluation): not in requests, in hosted $ / local $
    shadow_usd: float = 0.0  # their part of cost_usd

    @property
    def cost_usd(self) -> float:
        return self.hosted_usd + self.local_usd

    def flat(self) -> dict[str, object]:
        """One wide row: every column a spreadsheet needs, budgets spread into their own columns."""
        out: dict[str, object] = {k: v for k, v in asdict(self).items() if not k.startswith("budget_")}
        out["cost_usd"] = self.cost_usd
        for period, status in (("day", self.budget_day), ("month", self.budget_month)):
            for name in ("spent_usd", "limit_usd", "forecast_usd"):
                out[f"budget_{period}_{name}"] = getattr(status, name) if status is not None else None
        return out


def forecast(spent: float, start: float, end: float, now: float) -> float:
    """The window's spend at its current pace (linear), at least what is already spent."""
    elapsed = max(now - start, 60.0)  # the first minute of a window says little about its pace
    return spent if now >= end else spent * (end - start) / elapsed


def team_row(report: Report, policy: ChargebackPolicy, budget_day: BudgetStatus | None = None,
             budget_month: BudgetStatus | None = None) -> ChargeRow:
    local = [b for b in report.backends if b.backend in policy.local_backends]
    local_usd = sum(b.cost_usd + b.shadow_cost_usd for b in local)  # spend: shadow calls' too
    local_requests = sum(b.requests for b in local)
    prices = [f"{alias}: {label}" for alias, label in sorted(report.hosted_prices.items())]
    prices += [f"{b.backend}: {policy.local_prices[b.backend]}" for b in local if b.backend in policy.local_prices]
    return ChargeRow(
        "team", report.team, report.requests, report.prompt_tokens, report.completion_tokens,
        hosted_usd=report.cost_usd - local_usd, local_usd=local_usd, all_hosted_usd=report.hosted_cost_usd,
        savings_usd=report.savings_usd, price_used="; ".join(prices),
        share_local=local_requests / report.requests if report.requests else 0.0,
        errors=report.statuses.get("error", 0), rejected=report.statuses.get("rejected", 0),
        ttft_p50_s=report.ttft.p50, ttft_p95_s=report.ttft.p95, itl_p50_s=report.itl.p50, itl_p95_s=report.itl.p95,
        e2e_p50_s=report.e2e.p50, e2e_p95_s=report.e2e.p95, budget_day=budget_day, budget_month=budget_month,
        shadow_calls=report.shadow.calls, shadow_usd=report.shadow.cost_usd)


def exact_quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile of raw values (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def _names(record: UsageRecord, group: str) -> Iterable[str]:
    if group == "key":
        return (record.key_id or "-",)
    return (f"{k}={v}" for k, v in sorted(record.tags.items()) if k not in UNGROUPED_TAGS)


def record_rows(records: Iterable[UsageRecord], group: str, policy: ChargebackPolicy,
                hosted_price: HostedPrice | None = None) -> list[ChargeRow]:
    """Rows per key id, or per tag (`k=v`; a request with two tags counts in both rows)."""
    buckets: dict[str, list[UsageRecord]] = {}
    for record in records:
        for name in _names(record, group):
            buckets.setdefault(name, []).append(record)
    return sorted((_row(group, name, rs, policy, hosted_price) for name, rs in buckets.items()),
                  key=lambda r: (-r.cost_usd, r.name))


def _row(group: str, name: str, records: Sequence[UsageRecord], policy: ChargebackPolicy,
         hosted_price: HostedPrice | None) -> ChargeRow:
    """Spend from every record; requests, tokens, share local, errors, latency and the all-hosted
    counterfactual from the clients' requests only (a shadow call is evaluation, not traffic)."""
    local_usd = sum(r.cost_usd for r in records if r.backend in policy.local_backends)
    total = sum(r.cost_usd for r in records)
    requests = [r for r in records if not r.is_shadow]
    shadow_usd = total - sum(r.cost_usd for r in requests)
    all_hosted, labels = _all_hosted(requests, hosted_price)
    answered = [r for r in requests if r.status == "ok"]  # latency of what was answered, failures apart
    pick: Callable[[Sequence[float], float], float | None] = exact_quantile
    ttft = [r.ttft_s for r in answered if r.ttft_s is not None]
    e2e = [r.e2e_s for r in answered]
    itl_p50, itl_p95 = _itl(answered)
    local_requests = sum(r.backend in policy.local_backends for r in requests)
    return ChargeRow(
        group, name, len(requests), sum(r.prompt_tokens for r in requests),
        sum(r.completion_tokens for r in requests),
        hosted_usd=total - local_usd, local_usd=local_usd, all_hosted_usd=all_hosted,
        savings_usd=None if all_hosted is None else all_hosted - (total - shadow_usd),
        price_used="; ".join(sorted(labels)), share_local=local_requests / len(requests) if requests else 0.0,
        errors=sum(r.status == "error" for r in requests),
        rejected=sum(r.status == "rejected" for r in requests),
        ttft_p50_s=pick(ttft, 0.5), ttft_p95_s=pick(ttft, 0.95), itl_p50_s=itl_p50, itl_p95_s=itl_p95,
        e2e_p50_s=pick(e2e, 0.5), e2e_p95_s=pick(e2e, 0.95), shadow_calls=len(records) - len(requests),
        shadow_usd=shadow_usd)


def _itl(records: Sequence[UsageRecord]) -> tuple[float | None, float | None]:
    """From every gap when the records carry them; else (stores keep only each request's ITL p50 and
    p95) the median of the requests' p50s and the p95 of their p95s."""
    gaps = [g for r in records for g in r.itl_gaps_s]
    if gaps:
        return exact_quantile(gaps, 0.5), exact_quantile(gaps, 0.95)
    return (exact_quantile([r.itl_p50_s for r in records if r.itl_p50_s is not None], 0.5),
            exact_quantile([r.itl_p95_s for r in records if r.itl_p95_s is not None], 0.95))


def _all_hosted(records: Sequence[UsageRecord], hosted_price: HostedPrice | None) -> tuple[float | None, set[str]]:
    """What these records would have cost hosted; an alias with no hosted price counts at its actual cost."""
    if hosted_price is None:
        return None, set()
    usd, labels = 0.0, set()
    for r in records:
        try:
            priced = hosted_price(r.model_alias, r.prompt_tokens, r.completion_tokens)
        except Exception:  # noqa: BLE001  (an unknown model in a price table is "unpriced", not a failure)
            priced = None
        usd += priced.usd if priced is not None else r.cost_usd
        if priced is not None:
            labels.add(f"{r.model_alias}: {priced.price}")
    return usd, labels


def totals(rows: Sequence[ChargeRow], group: str = "total") -> ChargeRow:
    """The sum of rows (for team rows: every request once); latency percentiles do not add up: none."""
    def add(name: str) -> float:
        return sum(getattr(r, name) for r in rows)

    requests = int(add("requests"))
    hosted = [r.all_hosted_usd for r in rows]
    local_requests = sum(r.share_local * r.requests for r in rows)
    return ChargeRow(group, "total", requests, int(add("prompt_tokens")), int(add("completion_tokens")),
                     add("hosted_usd"), add("local_usd"),
                     None if any(h is None for h in hosted) else sum(h or 0.0 for h in hosted),
                     None if any(r.savings_usd is None for r in rows) else add("savings_usd"), "",
                     local_requests / requests if requests else 0.0, int(add("errors")), int(add("rejected")),
                     shadow_calls=int(add("shadow_calls")), shadow_usd=add("shadow_usd"))


_ADDED = ("shadow_calls", "shadow_usd")  # added columns go last: a CSV read by position keeps its columns
_BUDGETS = tuple(f"budget_{p}_{n}" for p in ("day", "month") for n in ("spent_usd", "limit_usd", "forecast_usd"))
COLUMNS = tuple(f.name for f in fields(ChargeRow)
                if not f.name.startswith("budget_") and f.name not in _ADDED) + ("cost_usd", *_BUDGETS, *_ADDED)


def _cell(value: object) -> object:
    if value is None:
        return ""
    return round(value, 9) if isinstance(value, float) else value  # nano-USD: what the stores keep


def to_csv(rows: Sequence[ChargeRow]) -> str:
    """One row per team (key, tag) and nothing else: the columns sum (the totals row is left out)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.flat().items()})
    return out.getvalue()
