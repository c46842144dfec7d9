"""GET /healthz (the process answers) and GET /readyz (backends open, background tasks, policy
version; details with the admin key — see gateway/readiness.py for the rule)."""
from __future__ import annotations

import os

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import is_admin, sole_authorization
from gateway.readiness import Readiness, readiness
from gateway.services import Services


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    svc: Services = request.app.state.services
    parts: Readiness = getattr(request.app.state, "readiness", None) or Readiness()
    admin = is_admin(sole_authorization(request.headers), svc.settings.admin_key)
    status, body = readiness(svc.ready, {name: b.state() for name, b in svc.backends.items()},
                             svc.catalog.absent, parts, admin=admin)
    body["workers"] = await parts.workers(admin) if parts.workers is not None else {"count": 1}
    if admin and parts.workers is None:
        body["workers"]["pid"] = os.getpid()
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


ROUTES = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
