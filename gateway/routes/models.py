"""GET /v1/models and /v1/models/{model}: the aliases the caller's team may use, narrowed to the
key's own `models` when it has them."""
from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import authorization
from gateway.errors import GatewayError, ModelNotFound, NotFound
from gateway.exchange import unrecorded_id_headers
from gateway.proxy import error_response
from gateway.services import Services


def _model(alias: str) -> dict[str, object]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "hybridgw"}


def _json(data: object, headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(data), headers=headers, media_type="application/json")


async def list_models(request: Request) -> Response:
    svc: Services = request.app.state.services
    headers = unrecorded_id_headers(request.headers.get("x-request-id"))
    try:
        key = await svc.authenticate(authorization(request.headers))
    except GatewayError as exc:
        return error_response(headers, exc)
    aliases = [a for a in svc.catalog.models_for(key.team) if key.spec.allows(a)]
    return _json({"object": "list", "data": [_model(a) for a in aliases]}, headers)


async def get_model(request: Request) -> Response:
    svc: Services = request.app.state.services
    headers = unrecorded_id_headers(request.headers.get("x-request-id"))
    alias = request.path_params["model"]
    try:
        key = await svc.authenticate(authorization(request.headers))
        if not svc.catalog.may_use(key.team, alias) or not key.spec.allows(alias):
            not_found = ModelNotFound(alias)
            raise NotFound(not_found.message, param="model", code="model_not_found")
    except GatewayError as exc:
        return error_response(headers, exc)
    return _json(_model(alias), headers)


ROUTES = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
