"""Admin API for virtual keys, guarded by the admin key ($HYBRIDGW_ADMIN_KEY): POST /admin/keys
(team, name, models, expires_at | duration, limits, budget, metadata, tags) → the key, shown once;
GET /admin/keys[?all=true][&team=T] and /admin/keys/{id} (with spend, last use, budget status); PATCH /admin/keys/{id};
POST /admin/keys/{id}/rotate {"grace_period"}; DELETE /admin/keys/{id}. Store calls run off the loop."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin_access import require_admin
from gateway.auth import KeyInfo, new_key_refusal
from gateway.errors import GatewayError, InvalidRequest, NotFound, ServiceUnavailable
from gateway.exchange import unrecorded_id_headers
from gateway.key_requests import KeyCreateBody, KeyUpdateBody, RotateBody, apply, check_spec, grace_seconds
from gateway.key_spec import KeySpec
from gateway.key_store import KeyRow, KeyStoreUnavailable
from gateway.key_usage import key_budget_status
from gateway.proxy import error_response
from gateway.request_body import read_json_body
from gateway.schemas import parse_body
from gateway.services import Services

T = TypeVar("T")


async def _admin(request: Request) -> Services:
    return await require_admin(request)  # 401 without the admin key, 403 for a team's key


async def _with_budget(svc: Services, rows: list[KeyRow]) -> list[dict[str, Any]]:
    """Each row's dict, with `budget_status` (spent / limit / forecast per day and month, from the
    limiter's windows) for a live key that has a USD budget here or in the policy's `keys:`."""
    out, policy_keys = [], svc.policy.current.policy.keys
    for row in rows:
        data = row.to_dict()
        in_policy = policy_keys.get(row.key_id)
        budgeted = row.spec.limits.usd_per_day is not None or row.spec.limits.usd_per_month is not None or (
            in_policy is not None and (in_policy.budget.usd_per_day, in_policy.budget.usd_per_month) != (None, None))
        if svc.limiter is not None and row.revoked_at is None and budgeted:  # one store read per budgeted key
            usages = await svc.limiter.usage(row.team, row.key_id, row.spec.limits)
            if any(u.scope == "key" and u.limit_name.startswith("usd") for u in usages):
                data["budget_status"] = key_budget_status(usages, time.time())
        out.append(data)
    return out


def _fail(request: Request, exc: GatewayError) -> Response:
    return error_response(unrecorded_id_headers(request.headers.get("x-request-id")), exc)


async def _store(call: Awaitable[T]) -> T:
    try:
        return await call
    except KeyStoreUnavailable as exc:
        raise ServiceUnavailable("The key store cannot be reached; retry shortly.", code="key_store_unavailable",
                                 retry_after_s=1.0) from exc


def _info(key: str, info: KeyInfo) -> Response:
    body = {"key": key, "key_id": info.key_id, "team": info.team, "name": info.name, **info.spec.to_dict()}
    return Response(orjson.dumps(body), status_code=201, media_type="application/json")


def _json(data: object) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def _no_key(key_id: str) -> NotFound:
    return NotFound(f"No active key with id {key_id!r}.", param="key_id", code="key_not_found")


async def create_key(request: Request) -> Response:
    try:
        svc = await _admin(request)
        body = parse_body(KeyCreateBody, await read_json_body(request, svc.settings.max_body_bytes))
        team = body.team.strip()
        refusal = new_key_refusal(team, svc.policy.current.policy)
        if refusal is not None:
            raise InvalidRequest(refusal, param="team", code="unknown_team")
        spec = apply(body, KeySpec())
        check_spec(spec, team, svc.catalog)
        key, info = await _store(asyncio.to_thread(svc.key_store.create, team, body.name or "", spec))
    except GatewayError as exc:
        return _fail(request, exc)
    return _info(key, info)


async def list_keys(request: Request) -> Response:
    try:
        svc = await _admin(request)
        everything = request.query_params.get("all", "").lower() in ("1", "true", "yes")
        team = request.query_params.get("team")
        rows = [row for row in await _store(asyncio.to_thread(svc.key_store.list, everything))
                if team is None or row.team == team]
        data = await _with_budget(svc, rows)
    except GatewayError as exc:
        return _fail(request, exc)
    return _json({"object": "list", "data": data})


async def key_info(request: Request) -> Response:
    try:
        svc = await _admin(request)
        key_id = request.path_params["key_id"]
        row = await _store(asyncio.to_thread(svc.key_store.get, key_id))
        if row is None:
            raise NotFound(f"No key with id {key_id!r}.", param="key_id", code="key_not_found")
        (data,) = await _with_budget(svc, [row])
    except GatewayError as exc:
        return _fail(request, exc)
    return _json(data)


async def update_key(request: Request) -> Response:
    """Only the fields the body names change; the team stays (a key's spend belongs to its team)."""
    try:
        svc = await _admin(request)
        key_id = request.path_params["key_id"]
        body = parse_body(KeyUpdateBody, await read_json_body(request, svc.settings.max_body_bytes))
        row = await _store(asyncio.to_thread(svc.key_store.get, key_id))
        if row is None or row.revoked_at is not None:
            raise _no_key(key_id)
        spec = apply(body, row.spec)
        check_spec(spec, row.team, svc.catalog)
        name = row.name if body.name is None else body.name
        if not await _store(asyncio.to_thread(svc.key_store.update, key_id, name, spec)):
            raise _no_key(key_id)
        svc.key_cache.forget_all()  # applies on this replica at once; on the others within the cache's TTL
        row = await _store(asyncio.to_thread(svc.key_store.get, key_id))
    except GatewayError as exc:
        return _fail(request, exc)
    return _json(row.to_dict() if row is not None else {})


async def rotate_key(request: Request) -> Response:
    try:
        svc = await _admin(request)
        key_id = request.path_params["key_id"]
        grace = grace_seconds(parse_body(RotateBody, await read_json_body(request, svc.settings.max_body_bytes, optional=True)))
        rotated = await _store(asyncio.to_thread(svc.key_store.rotate, key_id, grace))
        if rotated is None:
            raise _no_key(key_id)
        svc.key_cache.forget_all()
    except GatewayError as exc:
        return _fail(request, exc)
    key, info = rotated
    response = _info(key, info)
    response.status_code = 200
    return response


async def revoke_key(request: Request) -> Response:
    try:
        svc = await _admin(request)
        key_id = request.path_params["key_id"]
        revoked = await _store(asyncio.to_thread(svc.key_store.revoke, key_id))
        svc.key_cache.forget_all()  # refused on this replica at once; on the others within the cache's TTL
        if not revoked:
            raise _no_key(key_id)
    except GatewayError as exc:
        return _fail(request, exc)
    return _json({"key_id": key_id, "revoked": True})


ROUTES = [
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys/{key_id}", key_info, methods=["GET"]),
    Route("/admin/keys/{key_id}", update_key, methods=["PATCH"]),
    Route("/admin/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
