"""The app factory: wires settings, policy, key store, usage sink and the optional seams (limiter,
OTel providers, route function, engine URLs) into a plain Starlette app. Nothing happens at import time."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from opentelemetry import trace
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from gateway.assembly import key_cache_ttl_s
from gateway.backends.base import Backend
from gateway.backends.factory import build_backends
from gateway.catalog import build_catalog
from gateway.hot_routes import GatewayApp, error_json
from gateway.key_cache import KeyCache
from gateway.key_store import KeyStorage
from gateway.readiness import Readiness
from gateway.reload_changes import restart_changes
from gateway.routes import admin_keys, health, models, ui_policy
from gateway.routes.metrics import metrics_route
from gateway.routes.ui import console_routes
from gateway.routes.ui_api import console_api_routes
from gateway.routes.usage import usage_routes
from gateway.services import RouteFn, Services
from gateway.settings import Settings
from gateway.shadow_wiring import install_shadow
from gateway.telemetry import build_telemetry
from gateway.token_count import CompletionCounter
from observability.ledger import Ledger
from observability.limits_protocol import Limiter
from observability.metrics import Metrics, RequestMetrics
from observability.stores import UsageStore
from observability.usage import UsageSink
from policies.limits import limits_from_policy
from policies.loader import LoadedPolicy
from policies.offline import configure_offline_env
from policies.reload import PolicyReloader
from policies.router import PolicyRouter
from policies.schema import Policy


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            503: "service_unavailable"}.get(
        exc.status_code, "invalid_request_error")
    return error_json(exc.status_code, kind, str(exc.detail))


async def _unhandled(request: Request, exc: Exception) -> Response:
    return error_json(500, "internal_error", "The gateway hit an internal error.")


def create_app(settings: Settings, *, policy: Policy | LoadedPolicy, key_store: KeyStorage, usage_sink: UsageSink,
               limiter: Limiter | None = None, tracer_provider: trace.TracerProvider | None = None,
               metrics: Metrics | None = None, request_metrics: RequestMetrics | None = None,
               usage_store: UsageStore | None = None, route_fn: RouteFn | None = None,
               engine_urls: Mapping[str, str] | None = None,
               router: PolicyRouter | None = None, environ: Mapping[str, str] | None = None) -> Starlette:
    """`environ` resolves backends' *_env settings (default: os.environ). `router` defaults to a
    PolicyRouter over `policy`; with `settings.policy_file` set, the file is hot-reloaded. With
    `metrics` GET /metrics is served; with `usage_store` GET /v1/usage."""
    env = os.environ if environ is None else environ
    plain = policy.policy if isinstance(policy, LoadedPolicy) else policy
    catalog = build_catalog(plain, env, engine_urls)
    backends: dict[str, Backend] = build_backends(catalog)
    router = router or PolicyRouter(policy, engine_urls=engine_urls)
    services = Services(settings=settings, catalog=catalog, backends=backends, key_store=key_store,
                        key_cache=KeyCache(key_store, key_cache_ttl_s(settings)), usage_sink=usage_sink,
                        policy=router.policy, decider=router.decider, live=router.live, pricing=router.pricing,
                        route_fn=route_fn, telemetry=build_telemetry(tracer_provider),
                        tokens=CompletionCounter(router.decider.counter), limiter=limiter)

    parts = Readiness(ledger=usage_sink if isinstance(usage_sink, Ledger) else None, poller=router.poller,
                      limiter=limiter)

    def apply_reload(loaded: LoadedPolicy) -> None:
        router.reload(loaded)
        if limiter is not None:
            limiter.reconfigure(limits_from_policy(loaded.policy))
        # Aliases follow the new file; backends were opened (engines spawned) at start and stay as they were.
        services.catalog = build_catalog(loaded.policy, env, engine_urls)
        changes = restart_changes(plain, loaded.policy)
        for line in sorted(set(changes) - set(parts.restart_needed)):
            services.log.warning("policy reload: restart needed: %s", line)
        parts.restart_needed = changes

    reloader = PolicyReloader(settings.policy_file, apply_reload, environ=env) if settings.policy_file else None
    parts.reloader = reloader

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        configure_offline_env()
        services.tokens.load()
        for backend in backends.values():
            await backend.open()
        await router.start()
        if reloader is not None:
            await reloader.start()
        services.ready = True
        try:
            yield
        finally:
            services.ready = False
            if services.shadow is not None:
                await services.shadow.aclose()  # running shadow calls end and leave their records
            if reloader is not None:
                await reloader.stop()
            await router.stop()
            await services.drain()
            if limiter is not None:
                await limiter.aclose()
            for backend in backends.values():
                await backend.aclose()

    # One style, plain Starlette: every handler reads its own body (size limit, orjson, pass-through)
    # and answers OpenAI-shaped errors itself; FastAPI's layers would cost each request ~7 µs for nothing.
    # The model routes are GatewayApp's own (gateway/hot_routes.py), ahead of Starlette's layers.
    routes: list[BaseRoute] = []
    for module in (models, health, admin_keys, ui_policy):
        routes.extend(module.ROUTES)
    routes.extend([*console_routes(), *console_api_routes(usage_store)])
    if metrics is not None:
        routes.append(metrics_route(metrics, request_metrics, router.poller))
    if usage_store is not None:
        routes.extend(usage_routes(usage_store, services))
    app = GatewayApp(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: _http_exception, Exception: _unhandled})
    app.services = app.state.services = services
    app.state.readiness = parts
    parts.shadow = install_shadow(app, services, metrics.provider if metrics is not None else None)
    return app
