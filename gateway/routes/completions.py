"""POST /v1/completions (legacy text completions, streamed and not)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.proxy import COMPLETIONS, handle


async def completions(request: Request) -> Response:
    return await handle(request, COMPLETIONS)


ROUTES = [Route("/v1/completions", completions, methods=["POST"])]
