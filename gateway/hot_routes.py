"""The gateway's ASGI app: the model routes (POST /v1/chat/completions, /v1/completions, /v1/embeddings) by one
dict lookup straight to their handler; every other path, and the lifespan, through the Starlette app."""
from __future__ import annotations

import logging

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from gateway.errors import ErrorInfo
from gateway.proxy import CHAT, COMPLETIONS, EMBEDDINGS, Endpoint, handle
from gateway.services import Services

# The client's path of each endpoint is its upstream path under /v1 (the OpenAI API's own layout).
MODEL_ROUTES: dict[str, Endpoint] = {f"/v1/{e.path}": e for e in (CHAT, COMPLETIONS, EMBEDDINGS)}


def error_json(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = ErrorInfo(status, type_, message, None, None).body()
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


class GatewayApp(Starlette):
    """Starlette for everything but the model routes. Those skip its layers (error and exception
    middleware, the route scan, the request_response wrapper: ~10-15 µs a request) because their handler
    already answers every error OpenAI-shaped and leaves a record; they are served here and only here."""

    services: Services  # set by create_app before the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, root = scope["path"], scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root):]
            endpoint = MODEL_ROUTES.get(path)
            if endpoint is not None:
                scope["app"] = self
                await self._model_route(endpoint, scope, receive, send)
                return
            if path.endswith("/") and path[:-1] in MODEL_ROUTES:
                # Starlette's redirect_slashes, as before, for the routes it no longer holds.
                await RedirectResponse(scope["path"][:-1], status_code=307)(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _model_route(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            response = error_json(405, "invalid_request_error", "Method Not Allowed", {"allow": "POST"})
        else:
            try:
                response = await handle(self.services, Request(scope, receive), endpoint)
            except Exception:  # a bug outside handle()'s own net (it answers and records its errors)
                logging.getLogger("hybridgw.gateway").exception("request to %s failed", scope["path"])
                response = error_json(500, "internal_error", "The gateway hit an internal error.")
        await response(scope, receive, send)
