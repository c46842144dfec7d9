"""Admin API for keys, guarded by the admin key ($HYBRIDGW_ADMIN_KEY):
POST /admin/keys {"team", "name"} → the new key (shown once; only for a team the policy serves);
GET /admin/keys; DELETE /admin/keys/{key_id}. The store is called off the event loop."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import asdict
from typing import TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import is_admin, new_key_refusal
from gateway.errors import AuthError, GatewayError, InvalidRequest, NotFound, ServiceUnavailable
from gateway.exchange import Exchange
from gateway.key_store import KeyStoreUnavailable
from gateway.proxy import error_response
from gateway.request_body import read_json_body
from gateway.services import Services

T = TypeVar("T")


def _admin(request: Request) -> tuple[Services, Exchange]:
    svc: Services = request.app.state.services
    ex = Exchange.begin("admin", request.headers.get("x-request-id"))
    if not is_admin(request.headers.get("authorization"), svc.settings.admin_key):
        raise AuthError("Admin endpoints need the admin key (HYBRIDGW_ADMIN_KEY) as the bearer token.",
                        code="invalid_admin_key")
    return svc, ex


def _fail(request: Request, exc: GatewayError) -> Response:
    ex = Exchange.begin("admin", request.headers.get("x-request-id"))
    return error_response(ex, exc)


async def _store(call: Awaitable[T]) -> T:
    try:
        return await call
    except KeyStoreUnavailable as exc:
        raise ServiceUnavailable("The key store cannot be reached; retry shortly.", code="key_store_unavailable",
                                 retry_after_s=1.0) from exc


async def create_key(request: Request) -> Response:
    try:
        svc, _ = _admin(request)
        body = await read_json_body(request, svc.settings.max_body_bytes)
        team = body.get("team") if isinstance(body, dict) else None
        if not isinstance(team, str) or not team.strip():
            raise InvalidRequest("Missing required parameter: 'team'.", param="team")
        refusal = new_key_refusal(team.strip(), svc.router.compiled.policy)
        if refusal is not None:
            raise InvalidRequest(refusal, param="team", code="unknown_team")
        name = body.get("name", "")
        key, info = await _store(asyncio.to_thread(svc.key_store.create, team.strip(),
                                                   name if isinstance(name, str) else ""))
    except GatewayError as exc:
        return _fail(request, exc)
    return Response(orjson.dumps({"key": key, **asdict(info)}), status_code=201, media_type="application/json")


async def list_keys(request: Request) -> Response:
    try:
        svc, _ = _admin(request)
        rows = [asdict(row) for row in await _store(asyncio.to_thread(svc.key_store.list))]
    except GatewayError as exc:
        return _fail(request, exc)
    return Response(orjson.dumps({"object": "list", "data": rows}), media_type="application/json")


async def revoke_key(request: Request) -> Response:
    try:
        svc, _ = _admin(request)
        key_id = request.path_params["key_id"]
        revoked = await _store(asyncio.to_thread(svc.key_store.revoke, key_id))
        svc.key_cache.forget_all()  # refused on this replica at once; on the others within the cache's TTL
        if not revoked:
            raise NotFound(f"No active key with id {key_id!r}.", param="key_id")
    except GatewayError as exc:
        return _fail(request, exc)
    return Response(orjson.dumps({"key_id": key_id, "revoked": True}), media_type="application/json")


ROUTES = [
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
