"""GET /metrics: Prometheus text of the gateway's OTel metrics, engine gauges refreshed from the
poller's latest engine-state polls first. Team names and per-team cost are in it, so it needs the
admin key as a bearer token unless the operator set HYBRIDGW_METRICS_PUBLIC=1."""
from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import is_admin, sole_authorization
from gateway.errors import AuthError, error_info
from gateway.services import Services
from observability.metrics import Metrics, RequestMetrics
from policies.engine_poller import EngineStatePoller


def _unauthorized(admin_key_set: bool) -> Response:
    how = ("send the admin key (HYBRIDGW_ADMIN_KEY) as the bearer token" if admin_key_set
           else "set HYBRIDGW_ADMIN_KEY and send it as the bearer token")
    info = error_info(AuthError(f"/metrics needs the admin key: {how}, or set HYBRIDGW_METRICS_PUBLIC=1.",
                                code="invalid_admin_key"))
    return Response(orjson.dumps(info.body()), status_code=info.status, media_type="application/json",
                    headers={"www-authenticate": "Bearer"})


def metrics_route(metrics: Metrics, request_metrics: RequestMetrics | None,
                  poller: EngineStatePoller) -> Route:
    def prometheus(request: Request) -> Response:  # sync: Starlette runs it in a worker thread
        svc: Services = request.app.state.services
        allowed = svc.settings.metrics_public or is_admin(sole_authorization(request.headers),
                                                          svc.settings.admin_key)
        if not allowed:
            return _unauthorized(svc.settings.admin_key is not None)
        if request_metrics is not None:
            for backend, snap in poller.snapshots.items():
                used = 1.0 - snap.num_blocks_free / snap.num_blocks_total if snap.num_blocks_total else 0.0
                request_metrics.engine(backend, kv_usage=used, running=snap.num_running, waiting=snap.num_waiting)
        return Response(metrics.exposition(), media_type=metrics.content_type)

    return Route("/metrics", prometheus, methods=["GET"])
