"""A small real HTTP server (uvicorn, raw ASGI) standing in for a third-party engine's state
endpoints: our `/v1/engine/state` JSON and vLLM's Prometheus `/metrics`, both settable by the test."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tests.support.procs import free_port

VLLM_METRICS = """\
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{{block_size="16",num_gpu_blocks="{blocks}"}} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {usage}
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="m"}} {running}
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}
"""


@dataclass
class StateServer:
    url: str = ""  # http://127.0.0.1:P
    state: dict[str, Any] = field(default_factory=dict)  # served at /v1/engine/state
    vllm: dict[str, float] = field(default_factory=lambda: {"blocks": 1000, "usage": 0.0, "running": 0, "waiting": 0})
    status: int = 200  # set to 500 to make every poll fail
    polls: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.polls += 1
        if scope["path"] == "/metrics":
            body, kind = VLLM_METRICS.format(**self.vllm).encode(), b"text/plain; version=0.0.4"
        elif scope["path"] == "/v1/engine/state":
            body, kind = json.dumps(self.state).encode(), b"application/json"
        else:
            body, kind, self.status = b"{}", b"application/json", 404
        await send({"type": "http.response.start", "status": self.status, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving(server: StateServer) -> AsyncIterator[StateServer]:
    port = free_port()
    config = uvicorn.Config(server, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve())
    while not running.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        running.should_exit = True
        await task
