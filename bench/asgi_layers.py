"""What the framework layers cost per request, without a server: the same plain Starlette route called
through FastAPI (its middleware stack: errors, telemetry, body limit, exceptions, exit stack) vs a
Starlette app vs the bare route, by direct ASGI calls in one process, interleaved. Also the gateway's
own shape before and after the model routes left Starlette: a Starlette app with the gateway's exception
handlers and its other routes behind the model route, vs GatewayApp (gateway/hot_routes.py) dispatching to
the same trivial handler.

Run: .venv/bin/python -m bench.asgi_layers [--calls 20000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def endpoint(request: Request) -> Response:
    return Response(b"{}", media_type="application/json")


def apps() -> dict[str, Any]:
    routes = [Route("/v1/chat/completions", endpoint, methods=["POST"])]
    fast = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    fast.router.routes.extend(routes)
    return {"FastAPI": fast, "Starlette": Starlette(routes=routes), "bare route": routes[0], **gateway_shapes()}


def gateway_shapes() -> dict[str, Any]:
    """The gateway's app before (model routes as Starlette routes) and after (GatewayApp's table)."""
    from starlette.exceptions import HTTPException

    from gateway import hot_routes

    async def handle(svc: Any, request: Request, endpoint: Any) -> Response:
        return await endpoint_fn(request)

    endpoint_fn = endpoint
    hot_routes.handle = handle  # type: ignore[assignment]  # the trivial handler in place of proxy.handle
    others = [Route(f"/other/{i}", endpoint, methods=["GET"]) for i in range(20)]
    handlers: Any = {HTTPException: lambda r, e: Response(b"{}"), Exception: lambda r, e: Response(b"{}")}
    model = [Route(path, endpoint, methods=["POST"]) for path in hot_routes.MODEL_ROUTES]
    before = Starlette(routes=[*model, *others], exception_handlers=handlers)
    after = hot_routes.GatewayApp(routes=others, exception_handlers=handlers)
    after.services = None  # type: ignore[assignment]
    return {"gateway before: Starlette": before, "gateway after: GatewayApp": after}


async def per_call(app: Any, calls: int) -> float:
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "root_path": "", "scheme": "http", "query_string": b"", "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "http_version": "1.1", "asgi": {"version": "3.0"}}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    start = time.process_time()
    for _ in range(calls):
        await app(dict(scope), receive, send)
    return (time.process_time() - start) / calls


async def main_async(calls: int, rounds: int) -> dict[str, list[float]]:
    made = apps()
    out: dict[str, list[float]] = {name: [] for name in made}
    for app in made.values():
        await per_call(app, 500)  # warm-up
    for _ in range(rounds):
        for name, app in made.items():
            out[name].append(await per_call(app, calls))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    out = asyncio.run(main_async(args.calls, args.rounds))
    bare = statistics.median(out["bare route"])
    print("| app | CPU per call (µs) | over the bare route (µs) |\n|---|---|---|")
    for name, values in out.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1e6:.1f} | {(median - bare) * 1e6:+.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
