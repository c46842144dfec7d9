"""The app factory: wires settings, policy, key store, usage sink and the optional seams (limiter,
OTel providers, route function, engine URLs) into a FastAPI app. Nothing happens at import time."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI
from opentelemetry import metrics, trace
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.backends.base import Backend
from gateway.backends.factory import build_backends
from gateway.catalog import build_catalog
from gateway.errors import ErrorInfo
from gateway.key_store import KeyStore
from gateway.routes import admin_keys, chat, completions, embeddings, health, models
from gateway.routing import RouteFn, static_route
from gateway.services import Services
from gateway.settings import Settings
from gateway.telemetry import build_telemetry
from gateway.token_count import TokenCounter
from observability.limits_protocol import Limiter
from observability.usage import UsageSink
from policies.offline import configure_offline_env
from policies.schema import Policy


def _error_json(status: int, type_: str, message: str) -> Response:
    body = ErrorInfo(status, type_, message, None, None).body()
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
    return _error_json(exc.status_code, kind, str(exc.detail))


async def _unhandled(request: Request, exc: Exception) -> Response:
    return _error_json(500, "internal_error", "The gateway hit an internal error.")


def create_app(settings: Settings, *, policy: Policy, key_store: KeyStore, usage_sink: UsageSink,
               limiter: Limiter | None = None, tracer_provider: trace.TracerProvider | None = None,
               meter_provider: metrics.MeterProvider | None = None, route_fn: RouteFn | None = None,
               engine_urls: Mapping[str, str] | None = None,
               environ: Mapping[str, str] | None = None) -> FastAPI:
    """`environ` resolves backends' *_env settings (default: os.environ)."""
    catalog = build_catalog(policy, os.environ if environ is None else environ, engine_urls)
    backends: dict[str, Backend] = build_backends(catalog)
    services = Services(settings=settings, catalog=catalog, backends=backends, key_store=key_store,
                        usage_sink=usage_sink, route_fn=route_fn or static_route(catalog),
                        telemetry=build_telemetry(tracer_provider, meter_provider), tokens=TokenCounter(),
                        limiter=limiter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_offline_env()
        services.tokens.load()
        for backend in backends.values():
            await backend.open()
        services.ready = True
        try:
            yield
        finally:
            services.ready = False
            await services.drain()
            for backend in backends.values():
                await backend.aclose()

    app = FastAPI(title="hybridgw", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    # Plain Starlette routes: the handlers read the body themselves (size limit, orjson, pass-through).
    for module in (chat, completions, embeddings, models, health, admin_keys):
        app.router.routes.extend(module.ROUTES)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(Exception, _unhandled)
    return app
