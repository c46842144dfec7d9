"""The console's own read endpoints, admin key only (a team's key: 403): GET /console/api/teams (the
policy's teams, their limits, budgets and aliases), /console/api/backends (circuit, in-flight, KV use
and queue of each backend, from the router's live state), /console/api/requests (the newest usage
records: ids, route, tokens, cost, timings — the ledger holds no prompt text) and /console/api/now
(the last minute: requests/s, local share, TTFT/ITL, errors)."""
from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import asdict
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin_access import require_admin
from gateway.errors import GatewayError, InvalidRequest, ServiceUnavailable
from gateway.exchange import unrecorded_id_headers
from gateway.proxy import error_response
from gateway.report_prices import chargeback_policy
from observability.chargeback import exact_quantile
from observability.stores import StoreUnavailable, UsageStore
from observability.usage import UsageRecord
from policies.live import EngineSnapshot, HealthView

MAX_RECORDS = 500
NOW_WINDOW_S = 60.0
NOW_RECORD_LIMIT = 20_000
# What a row of recent requests shows: who, where, how much, how fast. Not the client's own
# x-request-id (it may carry anything); there is no prompt or completion text in a record to show.
_RECORD_FIELDS = ("request_id", "time", "team", "key_id", "model_alias", "backend", "rule", "status",
                  "http_status", "stream", "prompt_tokens", "completion_tokens", "cost_usd", "ttft_s",
                  "itl_p50_s", "e2e_s", "error_type", "tags")


def json_response(data: object) -> Response:
    """The console's JSON (sets as sorted lists, anything else unknown as text), never cached."""
    body = orjson.dumps(data, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o))
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


def fail(request: Request, exc: GatewayError) -> Response:
    return error_response(unrecorded_id_headers(request.headers.get("x-request-id")), exc)


async def teams(request: Request) -> Response:
    try:
        svc = await require_admin(request)
    except GatewayError as exc:
        return fail(request, exc)
    policy = svc.policy.current.policy
    rows = [{"team": name, "limits": team.limits.model_dump(), "budget": team.budget.model_dump(),
             "models": svc.catalog.models_for(name)} for name, team in sorted(policy.teams.items())]
    return json_response({"object": "list", "data": rows, "unknown_teams": policy.unknown_teams})


def engine_view(snap: EngineSnapshot | None, now: float) -> dict[str, Any] | None:
    """An engine's last polled state as the console shows it (None: not an engine, or never polled)."""
    if snap is None:
        return None
    used = 1.0 - snap.num_blocks_free / snap.num_blocks_total if snap.num_blocks_total else None
    return {"model": snap.model, "kv_used": used, "blocks_total": snap.num_blocks_total,
            "running": snap.num_running, "waiting": snap.num_waiting,
            "prefix_cache_hit_rate": snap.prefix_cache_hit_rate, "decode_tokens_per_s": snap.decode_tokens_per_s,
            "prefill_tokens_per_s": snap.prefill_tokens_per_s, "age_s": round(snap.age(now), 3)}


def _health(view: HealthView | None) -> dict[str, Any]:
    view = view or HealthView()
    return {"circuit": view.state, "unreachable": view.unreachable, "ttft_ewma_s": view.ttft_ewma_s,
            "ttft_p95_s": view.ttft_p95_s, "consecutive_failures": view.consecutive_failures}


async def backends(request: Request) -> Response:
    try:
        svc = await require_admin(request)
    except GatewayError as exc:
        return fail(request, exc)
    live, local = svc.live.live_state(), chargeback_policy(svc.policy.current).local_backends
    rows = []
    for name, backend in sorted(svc.backends.items()):
        state = asdict(backend.state())
        rows.append({**state, **_health(live.health.get(name)), "unreachable": name in live.unreachable, "local": name in local,
                     "engine": engine_view(live.engines.get(name), live.now),
                     "poll_error": svc.live.poll_errors.get(name)})
    return json_response({"object": "list", "data": rows, "absent": dict(svc.catalog.absent)})


def _recent(store: UsageStore, team: str | None, limit: int) -> list[dict[str, Any]]:
    now = time.time()
    records = store.records(team, now - 30 * 86400, now + 1, limit=limit)
    return [{name: getattr(r, name) for name in _RECORD_FIELDS} for r in records]


def last_minute(records: Sequence[UsageRecord], local: Collection[str], window_s: float = NOW_WINDOW_S,
                truncated: bool = False) -> dict[str, Any]:
    """What the overview shows as "now": rate, local share, latency of the answered ones, failures
    (of the clients' requests: a shadow call is spend, not traffic)."""
    records = [r for r in records if not r.is_shadow]
    ok = [r for r in records if r.status == "ok"]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    return {"window_s": window_s, "requests": len(records), "requests_per_s": len(records) / window_s,
            "truncated": truncated,  # more records in the window than were read: the rate is at least this
            "share_local": sum(r.backend in local for r in records) / len(records) if records else None,
            "ttft_p50_s": exact_quantile(ttft, 0.5), "ttft_p95_s": exact_quantile(ttft, 0.95),
            "itl_p50_s": exact_quantile([r.itl_p50_s for r in ok if r.itl_p50_s is not None], 0.5),
            "errors": sum(r.status == "error" for r in records), "rejected": sum(r.status == "rejected" for r in records)}


def now_route(store: UsageStore | None) -> Route:
    async def now(request: Request) -> Response:
        try:
            svc = await require_admin(request)
            if store is None:
                raise ServiceUnavailable("This gateway keeps no usage store.", code="store_unavailable")
            t = time.time()
            try:
                records = await run_in_threadpool(store.records, None, t - NOW_WINDOW_S, t + 1, NOW_RECORD_LIMIT)
            except StoreUnavailable as exc:
                raise ServiceUnavailable(f"The usage store is unavailable: {exc}", code="store_unavailable") from None
        except GatewayError as exc:
            return fail(request, exc)
        local = chargeback_policy(svc.policy.current).local_backends
        return json_response(last_minute(records, local, truncated=len(records) >= NOW_RECORD_LIMIT))

    return Route("/console/api/now", now, methods=["GET"])


def requests_route(store: UsageStore | None) -> Route:
    async def recent(request: Request) -> Response:
        try:
            await require_admin(request)
            if store is None:
                raise ServiceUnavailable("This gateway keeps no usage store.", code="store_unavailable")
            raw = request.query_params.get("limit", "100")
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_RECORDS:
                raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_RECORDS}.", param="limit",
                                     code="invalid_value")
            team = request.query_params.get("team") or None
            try:
                rows = await run_in_threadpool(_recent, store, team, int(raw))
            except StoreUnavailable as exc:
                raise ServiceUnavailable(f"The usage store is unavailable: {exc}", code="store_unavailable") from None
        except GatewayError as exc:
            return fail(request, exc)
        return json_response({"object": "list", "data": rows})

    return Route("/console/api/requests", recent, methods=["GET"])


def console_api_routes(store: UsageStore | None) -> list[Route]:
    return [Route("/console/api/teams", teams, methods=["GET"]),
            Route("/console/api/backends", backends, methods=["GET"]), requests_route(store), now_route(store)]
