"""The gateway's own event-loop CPU per request, without a server or a client in the measurement: the real app
(create_app, full path on: key auth, routing, rpm/tpm limits and a USD budget, the SQLite ledger, the access
line, OTLP spans at ratio 1) called by direct ASGI messages, 8 requests in flight, non-streamed, against the fake
upstream. Thread CPU of the loop's thread, µs per request; uvicorn and httptools are not in it, aiohttp is.

Run, once per tree, alternating (a path, not -m: the tree, not this checkout, must be first on sys.path):
    (cd TREE && PYTHONPATH=TREE python /path/to/this/bench/hot_path_inproc.py NAME [--requests 2000])
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.otlp_discard import start_discard
from bench.stack import create_key, start_fake
from bench.workers_throughput import POLICY
from gateway.app import create_app
from gateway.assembly import build_observability, open_key_store
from gateway.serve_cli import start_logging
from gateway.settings import Settings
from policies.loader import load_policy_file
from policies.offline import configure_offline_env
from tests.support import procs

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "say something short"}], "max_tokens": 16}'


def scope_for(key: str) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {key}".encode()), (b"content-length", str(len(BODY)).encode()),
               (b"user-agent", b"bench"), (b"accept", b"*/*")]
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
            "root_path": "", "scheme": "http", "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2), "http_version": "1.1", "asgi": {"version": "3.0"}}


async def one(app: Any, scope: dict[str, Any]) -> int:
    sent: list[dict[str, Any]] = []
    delivered = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await never.wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(dict(scope), receive, send)
    return int(sent[0]["status"])


async def measure(app: Any, scope: dict[str, Any], requests: int, concurrency: int = 8) -> float:
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            assert await one(app, scope) == 200

    start = time.thread_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.thread_time() - start) / requests


async def run(app: Any, key: str, requests: int, rounds: int) -> list[float]:
    async with app.router.lifespan_context(app):
        scope = scope_for(key)
        await measure(app, scope, 200)  # warm-up: connections, caches
        return [await measure(app, scope, requests) for _ in range(rounds)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fake, port = start_fake()
    sink, otlp_url = start_discard()
    workdir = Path(tempfile.mkdtemp(prefix="hp-inproc-"))
    config = workdir / "policy.yaml"
    config.write_text(POLICY.format(port=port))
    env = {"HYBRIDGW_DATA_DIR": str(workdir / "data"), "REDIS_URL": "", "HYBRIDGW_TRACES": "otlp",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_url, "HYBRIDGW_TRACE_SAMPLE_RATIO": "1.0"}
    os.environ.update(env)
    configure_offline_env()  # as `hybridgw serve` does first: the tokenizers are read from disk
    key = create_key(config, env, cwd=Path.cwd())
    listener = start_logging("warning")
    settings = Settings.from_env(data_dir=workdir / "data", policy_file=config)
    loaded = load_policy_file(config)
    store = open_key_store(settings)
    obs = build_observability(settings, loaded.policy, os.environ, key_store=store)
    try:
        app = create_app(settings, policy=loaded, key_store=store, usage_sink=obs.ledger, limiter=obs.limiter,
                         tracer_provider=obs.tracing.provider, metrics=obs.metrics,
                         request_metrics=obs.request_metrics, usage_store=obs.ledger.store)
        per = asyncio.run(run(app, key, args.requests, args.rounds))
    finally:
        obs.close()
        store.close()
        listener.stop()
        sink.shutdown()
        procs.stop(fake)
    load = os.getloadavg()[0]
    print(f"{args.name}: loop CPU per request {statistics.median(per) * 1e6:.0f} µs (rounds: "
          f"{' / '.join(f'{p * 1e6:.0f}' for p in per)}; load {load:.1f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
