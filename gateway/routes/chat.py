"""POST /v1/chat/completions (streamed and not)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.proxy import CHAT, handle


async def chat_completions(request: Request) -> Response:
    return await handle(request, CHAT)


ROUTES = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
