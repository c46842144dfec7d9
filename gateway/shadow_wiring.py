"""Shadowing's place in the app: the pair store the deployment uses (Redis with REDIS_URL, else SQLite
in the data dir), the Shadower on `services.shadow`, its counters on /metrics and the admin routes:
GET /admin/shadow/pairs?team=T[&limit=N] (admin key only) and GET /admin/shadow/status."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import orjson
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin_access import require_admin
from gateway.errors import GatewayError, InvalidRequest, ServiceUnavailable
from gateway.exchange import unrecorded_id_headers
from gateway.proxy import error_response
from gateway.services import Services
from gateway.settings import Settings
from gateway.shadow import Shadower
from observability.shadow_pairs import PairStore

MAX_EXPORT = 100_000


def pair_store_opener(settings: Settings) -> Callable[[], PairStore]:
    """Opens the store on the first pair (or read), not at start: a gateway that never shadows never opens it."""
    def open_store() -> PairStore:
        if settings.redis_url:  # the embedded case never imports redis
            from observability.shadow_store_redis import RedisPairStore

            return RedisPairStore.from_url(settings.redis_url)
        from gateway.data_dir import secure_data_dir
        from observability.shadow_store_sqlite import SqlitePairStore

        return SqlitePairStore.in_data_dir(secure_data_dir(settings.data_dir))

    return open_store


def install_shadow(app: Starlette, services: Services, provider: MeterProvider | None) -> Shadower:
    shadower = Shadower(services, pair_store_opener(services.settings))
    services.shadow = shadower
    if provider is not None:
        register_shadow_metrics(provider, shadower)
    app.router.routes.extend([Route("/admin/shadow/pairs", _pairs, methods=["GET"]),
                              Route("/admin/shadow/status", _status, methods=["GET"])])
    return shadower


def register_shadow_metrics(provider: MeterProvider, shadower: Shadower) -> None:
    """hybridgw_shadow_requests_total{outcome=sampled|sent|ok|failed|dropped|no_room|unhealthy|skipped|stored|
    store_failed}."""
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"outcome": k}) for k, n in dict(shadower.counts).items()]

    provider.get_meter("hybridgw.gateway").create_observable_counter(
        "hybridgw.shadow.requests", callbacks=[observe], unit="{request}",
        description="Shadow traffic: requests sampled, second calls sent/ok/failed, dropped (no_room: no KV "
                    "room on the local engine), pairs stored")


def _fail(request: Request, exc: GatewayError) -> Response:
    return error_response(unrecorded_id_headers(request.headers.get("x-request-id")), exc)


async def _pairs(request: Request) -> Response:
    try:
        svc = await require_admin(request)  # a team's key gets 403: pairs hold other people's prompts
        team = request.query_params.get("team", "").strip()
        if not team:
            raise InvalidRequest("Name the team: /admin/shadow/pairs?team=T.", param="team", code="missing_team")
        limit = _limit(request.query_params.get("limit"))
        assert svc.shadow is not None
        try:
            pairs = await asyncio.to_thread(svc.shadow.read_pairs, team, limit)
        except Exception as exc:
            raise ServiceUnavailable(f"The shadow pair store cannot be read: {exc}", code="shadow_store_unavailable",
                                     retry_after_s=1.0) from exc
    except GatewayError as exc:
        return _fail(request, exc)
    body = {"object": "list", "team": team, "data": [p.to_dict() for p in pairs]}
    return Response(orjson.dumps(body), media_type="application/json")


async def _status(request: Request) -> Response:
    try:
        svc = await require_admin(request)
    except GatewayError as exc:
        return _fail(request, exc)
    assert svc.shadow is not None
    body = {"counts": dict(svc.shadow.counts), "task": svc.shadow.status.snapshot().detail()}
    return Response(orjson.dumps(body), media_type="application/json")


def _limit(raw: str | None) -> int:
    if raw is None:
        return MAX_EXPORT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_EXPORT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_EXPORT}.", param="limit", code="invalid_limit")
    return value
