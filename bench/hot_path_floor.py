"""The floor under the gateway's hot path: the least a Python proxy on this stack can do per request and
per relayed chunk. A bare ASGI app that reads the body, decodes it (orjson), posts it to the upstream
with aiohttp and hands the answer back — streamed bytes forwarded as they come, nothing parsed — under
uvicorn (uvloop + httptools, as `hybridgw serve`) or granian. No auth, policy, limits, ledger, tracing.
bench/hot_path.py and bench/hot_path_relay.py run it beside the gateway (`--tree floor=.+floor`).

Run: python -m bench.hot_path_floor serve --config POLICY.yaml --port P [--server uvicorn|granian]
(the upstream is the policy's first backend's base_url, so it takes the gateway's own arguments)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
import yaml

Scope = dict[str, Any]
_SSE = [(b"content-type", b"text/event-stream")]
_JSON = [(b"content-type", b"application/json")]


class Forward:
    """POST /v1/<path> → the upstream's /<path>, answer relayed; GET /healthz → 200."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                # idle connections dropped before the upstream's 5 s keep-alive ends them (as the gateway does)
                self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0))
                await send({"type": "lifespan.startup.complete"})
            if self.session is not None:
                await self.session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": _JSON})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        stream = bool(orjson.loads(body).get("stream"))
        assert self.session is not None
        url = self.base_url + scope["path"].removeprefix("/v1")
        async with self.session.post(url, data=body, headers={"content-type": "application/json"}) as response:
            await send({"type": "http.response.start", "status": response.status, "headers": _SSE if stream else _JSON})
            if not stream:
                await send({"type": "http.response.body", "body": await response.read()})
                return
            content = response.content
            while piece := await content.readany():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    args = parser.parse_args()
    backends = yaml.safe_load(args.config.read_text())["backends"]
    app = Forward(next(iter(backends.values()))["base_url"])
    if args.server == "granian":
        from granian.constants import Interfaces
        from granian.server.embed import Server

        uvloop.run(Server(app, address="127.0.0.1", port=args.port, interface=Interfaces.ASGI, log_access=False,
                          log_level="warning", backlog=2048).serve())
        return
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
