"""The usage report model, computed from rollups (and, for the TTFT scatter, raw records): totals,
the all-hosted counterfactual and savings, route split, latency percentiles, errors, top models and
the series the HTML plots draw. Shadow calls are in the cost and their own `shadow` block only (the
rollups keep them out of every traffic count). Pure: no I/O, no clock."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from observability.rollups import (
    LATENCY_BOUNDS_S,
    NANO,
    TOKEN_EDGES,
    Rollup,
    grouped,
    histogram,
    isl_osl_matrix,
    itl_profile,
    labelled,
    merge_fields,
)
from observability.usage import UsageRecord


@dataclass(frozen=True)
class HostedCost:
    """What an alias's tokens would have cost on a hosted API, and which price said so."""

    usd: float
    price: str  # e.g. "openai/gpt-4o-mini $0.15 in, $0.60 out per Mtok (policy)"


HostedPrice = Callable[[str, int, int], HostedCost | None]  # (model alias, prompt, completion)


def price_label(name: str, input_usd_per_token: float, output_usd_per_token: float, source: str) -> str:
    """How a report names the price it used: model, $ per million tokens in and out, and who set it."""
    return f"{name} ${input_usd_per_token * 1e6:.4g} in, ${output_usd_per_token * 1e6:.4g} out per Mtok ({source})"


def first_priced(*prices: HostedPrice) -> HostedPrice:
    """The first of `prices` that knows the alias (e.g. the policy's, then a price table's)."""
    def price(model: str, prompt: int, completion: int) -> HostedCost | None:
        for candidate in prices:
            found = candidate(model, prompt, completion)
            if found is not None:
                return found
        return None

    return price
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The longest window a report may ask for: what the stores keep (Redis day rollups live 400 days).
# A larger window would only make the stores enumerate empty periods (7e8 of them for 99999999w).
MAX_SINCE_DAYS = 400
MAX_SINCE_S = MAX_SINCE_DAYS * 86400


def parse_since(text: str) -> float:
    """"7d", "12h", "30m", "2w", "90s" → seconds; ValueError otherwise, also beyond MAX_SINCE_DAYS."""
    match = _SINCE.match(text)
    if not match:
        raise ValueError(f"since must look like 7d, 12h, 30m, 2w or 90s, not {text[:40]!r}")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not seconds <= MAX_SINCE_S:  # also catches inf from a few hundred digits
        raise ValueError(f"since may be at most {MAX_SINCE_DAYS}d: older usage is not retained")
    return seconds


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class Box:
    """Five-number summary (p5, p25, p50, p75, p95) read from a latency histogram."""

    count: int
    p5: float
    p25: float
    p50: float
    p75: float
    p95: float


@dataclass(frozen=True)
class BackendLine:
    backend: str
    requests: int  # client requests (shadow calls are not requests)
    share: float  # of all requests
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float  # of the requests it served
    e2e: Box | None
    shadow_calls: int = 0  # shadow calls it answered (evaluation, not traffic)
    shadow_cost_usd: float = 0.0  # their spend: the backend's whole spend is cost_usd + this


@dataclass(frozen=True)
class ShadowSpend:
    """Shadow calls (rule `shadow`): the second answers a team's sampled requests paid for to evaluate
    the other model. Their cost is in Report.cost_usd (spend, budgets); nothing else of theirs is in
    the report's requests, tokens, route split, latency or savings."""

    calls: int = 0
    failed: int = 0  # of the calls: no answer (error or aborted), still recorded and priced
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class ModelLine:
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    hosted_cost_usd: float | None  # None: hosted_price does not know this model
    hosted_price: str | None = None  # which price the hosted cost is at


@dataclass(frozen=True)
class LineFit:
    """TTFT ≈ intercept + slope × input tokens (least squares)."""

    n: int
    slope_s_per_token: float
    intercept_s: float


@dataclass(frozen=True)
class Report:
    team: str  # "*" for all teams
    since: float
    until: float
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    hosted_cost_usd: float | None  # the same traffic all on hosted APIs (unpriced models at actual
    savings_usd: float | None  # cost); both None when no hosted_price was given
    unpriced_models: tuple[str, ...]
    hosted_prices: dict[str, str]  # model alias -> the price its all-hosted cost is at
    statuses: dict[str, int]
    errors: dict[str, int]
    backends: tuple[BackendLine, ...]
    models: tuple[ModelLine, ...]  # most requests first
    ttft: Percentiles
    itl: Percentiles
    e2e: Percentiles
    token_edges: tuple[int, ...]
    isl_osl: tuple[tuple[int, ...], ...]  # [ISL bucket][OSL bucket] request counts
    ttft_fit: LineFit | None
    ttft_points: tuple[tuple[int, float], ...]  # (input tokens, TTFT s) from raw records
    itl_profile: tuple[tuple[int, float, int], ...]  # (first output position, mean gap s, gaps)
    # (day, ((backend, USD), ...)): spend, the shadow calls' included
    daily_cost: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]
    # Added with shadow traffic (defaults keep older callers and the JSON's existing fields as they were):
    shadow: ShadowSpend = ShadowSpend()  # evaluation spend, in cost_usd
    served_cost_usd: float = 0.0  # cost_usd less the shadow spend: what serving the requests cost

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantile(counts: Sequence[int], q: float, bounds: Sequence[float] = LATENCY_BOUNDS_S) -> float | None:
    """The q-quantile (0..1) of a bucketed histogram, linear within the bucket it falls in."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(bounds):
                return bounds[-1]  # overflow bucket: all we know is "above the last bound"
            low = bounds[index - 1] if index > 0 else 0.0
            return low + (bounds[index] - low) * max(rank - seen, 0) / count
        seen += count
    return bounds[-1]


def percentiles(counts: Sequence[int]) -> Percentiles:
    return Percentiles(sum(counts), *(quantile(counts, q) for q in (0.5, 0.9, 0.95, 0.99)))


def box(counts: Sequence[int]) -> Box | None:
    if not sum(counts):
        return None
    return Box(sum(counts), *(quantile(counts, q) or 0.0 for q in (0.05, 0.25, 0.5, 0.75, 0.95)))


def fit_ttft(fields: dict[str, float]) -> LineFit | None:
    n, sx, sy = fields.get("reg|n", 0), fields.get("reg|sx", 0), fields.get("reg|sy", 0)
    sxx, sxy = fields.get("reg|sxx", 0), fields.get("reg|sxy", 0)
    denominator = n * sxx - sx * sx
    if n < 2 or denominator <= 0:
        return None
    slope = (n * sxy - sx * sy) / denominator
    return LineFit(int(n), slope, (sy - slope * sx) / n)


def _day(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d")


def _daily_cost(rollups: Iterable[Rollup]) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    days: dict[str, dict[str, float]] = {}
    for rollup in rollups:
        per = days.setdefault(_day(rollup.start), {})
        for group in ("backend", "shadow_b"):  # spend by day: a shadow call's cost is spend too
            for backend, values in grouped(rollup.fields, group).items():
                per[backend] = per.get(backend, 0.0) + values.get("cost_nusd", 0) / NANO
    return tuple((day, tuple(sorted(per.items()))) for day, per in sorted(days.items()))


def _models(fields: dict[str, float], hosted_price: HostedPrice | None, top: int) -> tuple[ModelLine, ...]:
    lines = []
    for model, v in grouped(fields, "model").items():
        prompt, completion = int(v.get("prompt_tokens", 0)), int(v.get("completion_tokens", 0))
        hosted = None
        if hosted_price is not None:
            try:
                hosted = hosted_price(model, prompt, completion)
            except Exception:  # an unknown model in a price table is "unpriced", not a failed report
                hosted = None
        lines.append(ModelLine(model, int(v.get("requests", 0)), prompt, completion, v.get("cost_nusd", 0) / NANO,
                               hosted.usd if hosted else None, hosted.price if hosted else None))
    lines.sort(key=lambda m: (-m.requests, m.model))
    return tuple(lines[:top]) if top else tuple(lines)


def _backends(fields: dict[str, float], requests: int) -> tuple[BackendLine, ...]:
    served, shadow = grouped(fields, "backend"), grouped(fields, "shadow_b")
    lines = []
    for name in served.keys() | shadow.keys():  # a backend that only answered shadow calls too
        v, s = served.get(name, {}), shadow.get(name, {})
        lines.append(BackendLine(
            name, int(v.get("requests", 0)), v.get("requests", 0) / requests if requests else 0.0,
            int(v.get("prompt_tokens", 0)), int(v.get("completion_tokens", 0)), v.get("cost_nusd", 0) / NANO,
            box(histogram(fields, f"e2e_b|{name}")), int(s.get("calls", 0)), s.get("cost_nusd", 0) / NANO))
    return tuple(sorted(lines, key=lambda b: (-b.requests, -b.shadow_calls, b.backend)))


def _shadow(fields: dict[str, float]) -> ShadowSpend:
    return ShadowSpend(int(fields.get("shadow|calls", 0)), int(fields.get("shadow|failed", 0)),
                       int(fields.get("shadow|prompt_tokens", 0)), int(fields.get("shadow|completion_tokens", 0)),
                       fields.get("shadow|cost_nusd", 0) / NANO)


def build_report(rollups: Sequence[Rollup], *, team: str | None, since: float, until: float,
                 hosted_price: HostedPrice | None = None, records: Sequence[UsageRecord] = (),
                 top_models: int = 10, max_points: int = 2000) -> Report:
    fields = merge_fields(r.fields for r in rollups)
    requests = int(fields.get("requests", 0))
    cost = fields.get("cost_nusd", 0) / NANO
    shadow = _shadow(fields)
    served_cost = cost - shadow.cost_usd
    all_models = _models(fields, hosted_price, 0)  # served requests only: the counterfactual is the traffic's
    hosted = None
    if hosted_price is not None:
        hosted = sum(m.hosted_cost_usd if m.hosted_cost_usd is not None else m.cost_usd for m in all_models)
    served = [r for r in records if not r.is_shadow]
    points = tuple((r.prompt_tokens, r.ttft_s) for r in served[:max_points] if r.ttft_s is not None)
    return Report(
        team=team or "*", since=since, until=until, requests=requests,
        prompt_tokens=int(fields.get("prompt_tokens", 0)), completion_tokens=int(fields.get("completion_tokens", 0)),
        cost_usd=cost, hosted_cost_usd=hosted, savings_usd=None if hosted is None else hosted - served_cost,
        unpriced_models=tuple(sorted(m.model for m in all_models if hosted_price and m.hosted_cost_usd is None)),
        hosted_prices={m.model: m.hosted_price for m in sorted(all_models, key=lambda m: m.model) if m.hosted_price},
        statuses=labelled(fields, "status"), errors=labelled(fields, "err"),
        backends=_backends(fields, requests), models=all_models[:top_models],
        ttft=percentiles(histogram(fields, "ttft")), itl=percentiles(histogram(fields, "itl")),
        e2e=percentiles(histogram(fields, "e2e")),
        token_edges=TOKEN_EDGES, isl_osl=tuple(tuple(row) for row in isl_osl_matrix(fields)),
        ttft_fit=fit_ttft(fields), ttft_points=points, itl_profile=tuple(itl_profile(fields)),
        daily_cost=_daily_cost(rollups), shadow=shadow, served_cost_usd=served_cost,
    )
