"""GET /v1/usage: a team's key sees only its own team's report, the admin key any team's or all.
A route factory (plain Starlette): the gateway mounts it with its store and an auth function of its own.
Shadow calls are in `cost_usd` and the `shadow` block (per team: shadow_calls, shadow_cost_usd) only."""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from observability.chargeback import GROUPS, ChargebackPolicy, to_csv
from observability.chargeback_source import fetch_chargeback
from observability.report import HostedPrice, Report, parse_since
from observability.report_render import render
from observability.report_source import fetch_report
from observability.stores import StoreUnavailable, UsageStore


@dataclass(frozen=True)
class UsageCaller:
    """Who is asking, as the gateway's auth resolved the bearer key."""

    team: str | None  # the key's team (None for the admin key)
    is_admin: bool = False


def _error(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def _team_totals(store: UsageStore, since_s: float, now: float) -> list[dict[str, Any]]:
    out = []
    for team in store.teams():
        r = fetch_report(store, team=team, since_s=since_s, now=now, max_points=0)
        if r.requests or r.shadow.calls:
            out.append({"team": team, "requests": r.requests, "prompt_tokens": r.prompt_tokens,
                        "completion_tokens": r.completion_tokens, "cost_usd": r.cost_usd,
                        "shadow_calls": r.shadow.calls, "shadow_cost_usd": r.shadow.cost_usd})
    return out


def _chargeback(store: UsageStore, group: str, team: str | None, since_s: float, now: float, format: str,
                policy: ChargebackPolicy, hosted_price: HostedPrice | None) -> Response:
    result = fetch_chargeback(store, group=group, team=team, since_s=since_s, now=now, policy=policy,
                              hosted_price=hosted_price)
    if format == "csv":
        return PlainTextResponse(to_csv(result.rows), media_type="text/csv; charset=utf-8")
    return JSONResponse({"object": "usage.chargeback", **result.to_dict()})


def usage_route(store: UsageStore, caller: Callable[[Request], Awaitable[UsageCaller]], *,
                hosted_price: HostedPrice | None = None, clock: Callable[[], float] = time.time,
                chargeback_policy: Callable[[], ChargebackPolicy] = ChargebackPolicy) -> Route:
    """`caller` resolves the request's bearer key to a UsageCaller (raising an HTTPException, e.g. 401, when
    it cannot). Query: `team` (default: the key's own team; admin: all), `since` (90s, 30m, 12h, 7d, 2w),
    `format` (json, csv or html); `?by=team|key|tag` answers the chargeback table instead (json or a wide
    csv, one row per team, key or tag); `chargeback_policy` says which backends are local and the teams' budgets."""

    async def get_usage(request: Request) -> Response:
        who = await caller(request)
        query = request.query_params
        team, since = query.get("team"), query.get("since", "7d")
        format, by = query.get("format", "json"), query.get("by")
        if not who.is_admin and team is not None and team != who.team:
            return _error(403, "this key may only read its own team's usage", "permission_error", "team",
                          "insufficient_permissions")
        try:
            since_s = parse_since(since)
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request_error", "since", "invalid_value")
        if format not in ("json", "csv", "html"):
            return _error(400, "format must be json, csv or html", "invalid_request_error", "format", "invalid_value")
        if by is not None and (by not in GROUPS or format == "html"):
            return _error(400, f"by must be one of {', '.join(GROUPS)} (format json or csv)",
                          "invalid_request_error", "by", "invalid_value")
        wanted = team if (who.is_admin or team is not None) else who.team
        now = clock()
        try:
            if by is not None:
                return await run_in_threadpool(_chargeback, store, by, wanted, since_s, now, format,
                                               chargeback_policy(), hosted_price)
            report: Report = await run_in_threadpool(
                fetch_report, store, team=wanted, since_s=since_s, now=now, hosted_price=hosted_price)
            teams = await run_in_threadpool(_team_totals, store, since_s, now) if wanted is None else None
        except StoreUnavailable as exc:
            return _error(503, f"usage store unavailable: {exc}", "api_error", None, "store_unavailable")
        if format != "json":
            media = "text/html; charset=utf-8" if format == "html" else "text/csv; charset=utf-8"
            return PlainTextResponse(render(report, format), media_type=media)
        body = {"object": "usage.report", **report.to_dict()}
        if teams is not None:
            body["teams"] = teams
        return JSONResponse(body)

    return Route("/v1/usage", get_usage, methods=["GET"])
