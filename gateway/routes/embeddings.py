"""POST /v1/embeddings (passed through to hosted or engine backends)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.proxy import EMBEDDINGS, handle


async def embeddings(request: Request) -> Response:
    return await handle(request, EMBEDDINGS)


ROUTES = [Route("/v1/embeddings", embeddings, methods=["POST"])]
