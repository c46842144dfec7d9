"""GET /metrics: Prometheus text of the gateway's OTel metrics, engine gauges refreshed from the
router's latest engine-state polls first."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from observability.metrics import Metrics, RequestMetrics
from policies.router import PolicyRouter


def metrics_route(metrics: Metrics, request_metrics: RequestMetrics | None, router: PolicyRouter) -> Route:
    def prometheus(request: Request) -> Response:  # sync: Starlette runs it in a worker thread
        if request_metrics is not None:
            for backend, snap in router.poller.snapshots.items():
                used = 1.0 - snap.num_blocks_free / snap.num_blocks_total if snap.num_blocks_total else 0.0
                request_metrics.engine(backend, kv_usage=used, running=snap.num_running, waiting=snap.num_waiting)
        return Response(metrics.exposition(), media_type=metrics.content_type)

    return Route("/metrics", prometheus, methods=["GET"])
