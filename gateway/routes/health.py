"""GET /healthz (the process answers) and GET /readyz (backends open; their counters)."""
from __future__ import annotations

from dataclasses import asdict

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.services import Services


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    svc: Services = request.app.state.services
    ready = svc.ready and bool(svc.backends)
    body = {
        "status": "ready" if ready else "not_ready",
        "backends": {name: asdict(b.state()) for name, b in svc.backends.items()},
        "absent_backends": dict(svc.catalog.absent),
    }
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")


ROUTES = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
