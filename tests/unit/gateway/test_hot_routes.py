"""The model routes are GatewayApp's own (gateway/hot_routes.py): one table, no Starlette route for them, a
wrong method answered OpenAI-shaped (405, Allow: POST) and a trailing slash redirected as Starlette did.
Direct ASGI calls, in process; tests/integration/gateway covers the full requests."""
from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.routing import Route

from gateway.hot_routes import MODEL_ROUTES, GatewayApp


def _call(app: GatewayApp, method: str, path: str) -> list[dict[str, Any]]:
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
             "scheme": "http", "query_string": b"", "headers": [(b"host", b"gw")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 2), "http_version": "1.1", "asgi": {"version": "3.0"}}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_the_table_holds_the_three_model_routes() -> None:
    assert sorted(MODEL_ROUTES) == ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


def test_a_wrong_method_is_an_openai_shaped_405_without_starlettes_layers() -> None:
    for path in MODEL_ROUTES:
        app = GatewayApp(routes=[])
        start, body = _call(app, "GET", path)
        headers = dict(start["headers"])
        assert (start["status"], headers[b"allow"]) == (405, b"POST")
        assert orjson.loads(body["body"])["error"]["type"] == "invalid_request_error"
        assert app.middleware_stack is None  # Starlette's stack is built on its first request: never here


def test_a_trailing_slash_is_redirected_and_other_paths_reach_starlette() -> None:
    async def other(request: Any) -> Any:
        from starlette.responses import PlainTextResponse
        return PlainTextResponse("starlette")

    app = GatewayApp(routes=[Route("/v1/models", other)])
    start, _ = _call(app, "POST", "/v1/chat/completions/")[:2]
    assert start["status"] == 307 and dict(start["headers"])[b"location"].endswith(b"/v1/chat/completions")
    start, body = _call(app, "GET", "/v1/models")
    assert start["status"] == 200 and body["body"] == b"starlette"
