"""Reference cycles per request on each request path, not just the happy one: one gateway per tree (full path, as
bench/thread_cpu_split.py starts it, under bench/named_gateway.py with gc.DEBUG_SAVEALL), then per path N requests
at C in flight and what the cyclic GC found unreachable (a full collection before and after each path), by type.
Paths: non-streamed, streamed, upstream 500 (both), an in-band stream error, the upstream dropping the connection
mid-stream, the client hanging up mid-stream or before a non-streamed answer, the upstream's first-byte and
between-chunks timeouts, an unreachable upstream, a limit refusal (429), a body that is no JSON and one that fails
the schema (400). The circuit breaker is kept closed (each path's own cost, not an open circuit's 503s).

Run: PYTHONPATH=$PWD .venv/bin/python -m bench.cycle_paths [--tree NAME=PATH ...] [--requests 400] [--concurrency 16]
     [--path NAME ...] [--frames]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.stack import create_key, start_fake
from tests.support import procs

ROOT = Path(__file__).resolve().parents[1]
POLICY = """
backends:
  up: {{kind: openai, base_url: 'http://127.0.0.1:{port}/v1', price: {{input_usd_per_mtok: 1, output_usd_per_mtok: 2}}}}
  slow: {{kind: openai, base_url: 'http://127.0.0.1:{port}/v1', timeouts: {{first_byte_s: 0.05, between_chunks_s: 0.05}}}}
  dead: {{kind: openai, base_url: 'http://127.0.0.1:{dead_port}/v1'}}
models:
  m: {{deployments: [{{backend: up, model: m}}]}}
  slow: {{deployments: [{{backend: slow, model: m}}]}}
  dead: {{deployments: [{{backend: dead, model: m}}]}}
teams:
  bench:
    limits: {{requests_per_minute: 100000000, tokens_per_minute: 100000000000}}
    budget: {{usd_per_day: 1000000}}
  tight:
    limits: {{requests_per_minute: 1}}
health: {{failure_threshold: 1000000000}}  # the error paths' own cost, not an open circuit's 503s
"""
CHAT = [{"role": "user", "content": "say something short"}]


@dataclass(frozen=True)
class Gateway:
    name: str
    url: str
    key: str
    tight_key: str  # a key of the team allowed one request a minute: the rest are 429s
    proc: procs.Proc
    names: Path  # bench/named_gateway.py's output


@dataclass(frozen=True)
class RequestPath:
    name: str
    send: Callable[[httpx.AsyncClient, Gateway], Awaitable[int]]  # one request; its status


def _body(stream: bool, knobs: str, model: str = "m") -> bytes:
    return json.dumps({"model": model, "messages": CHAT, "max_tokens": 16, "stream": stream,
                       "user": f"fake:{knobs}"}).encode()


def _post(stream: bool, knobs: str, tight: bool = False, raw: bytes | None = None, model: str = "m") -> Callable:
    body = raw if raw is not None else _body(stream, knobs, model)

    async def send(client: httpx.AsyncClient, gw: Gateway) -> int:
        headers = {"authorization": f"Bearer {gw.tight_key if tight else gw.key}", "content-type": "application/json"}
        async with client.stream("POST", f"{gw.url}/v1/chat/completions", content=body, headers=headers) as r:
            await r.aread()
            return r.status_code
    return send


def _hang_up(knobs: str) -> Callable:
    """A stream the client leaves after its first bytes (the connection is closed, not reused)."""
    async def send(client: httpx.AsyncClient, gw: Gateway) -> int:
        headers = {"authorization": f"Bearer {gw.key}", "content-type": "application/json"}
        async with client.stream("POST", f"{gw.url}/v1/chat/completions", content=_body(True, knobs),
                                 headers=headers) as r:
            async for _ in r.aiter_raw():
                break
            return 499
    return send


def _give_up(knobs: str, after_s: float) -> Callable:
    """A non-streamed request the client abandons before the answer (the connection is closed)."""
    post = _post(False, knobs)

    async def send(client: httpx.AsyncClient, gw: Gateway) -> int:
        try:
            return await asyncio.wait_for(post(client, gw), after_s)
        except TimeoutError:
            return 499
    return send


PATHS = [
    RequestPath("non-streamed", _post(False, "ttft_ms=2")),
    RequestPath("streamed (16 chunks)", _post(True, "ttft_ms=2;chunks=16")),
    RequestPath("upstream 500, non-streamed", _post(False, "status=500")),
    RequestPath("upstream 500, streamed", _post(True, "status=500")),
    RequestPath("in-band error after 2 chunks", _post(True, "chunks=16;error_after=2")),
    RequestPath("upstream drops mid-stream", _post(True, "chunks=16;fail_after=2")),
    RequestPath("client hangs up mid-stream", _hang_up("chunks=16;delay_ms=5")),
    RequestPath("client hangs up before the answer", _give_up("ttft_ms=100", 0.02)),
    RequestPath("upstream first-byte timeout, non-streamed", _post(False, "ttft_ms=200", model="slow")),
    RequestPath("upstream stalls mid-stream (between-chunks timeout)", _post(True, "chunks=4;delay_ms=200", model="slow")),
    RequestPath("upstream unreachable (connection refused)", _post(False, "", model="dead")),
    RequestPath("limit refusal (429)", _post(False, "ttft_ms=2", tight=True)),
    RequestPath("body not JSON (400)", _post(False, "", raw=b'{"model": "m", "messages": [')),
    RequestPath("body fails the schema (400)", _post(False, "", raw=b'{"model": "m", "messages": "hi", "max_tokens": -1}')),
]


def snapshot(gw: Gateway) -> dict:
    """bench/named_gateway.py's write (a full collection first while counting): garbage since the last one."""
    gw.names.unlink(missing_ok=True)
    os.kill(gw.proc.pid, signal.SIGUSR1)
    procs.wait_until(gw.names.exists, "the gateway's GC figures")
    return json.loads(gw.names.read_text())


async def one_path(gw: Gateway, path: RequestPath, requests: int, concurrency: int,
                   verbose: bool = False) -> tuple[float, str, Counter[int]]:
    """Objects a request left to the cyclic GC on this path, by type, and the statuses seen."""
    statuses: Counter[int] = Counter()
    left = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        snapshot(gw)  # the count starts here

        async def worker() -> None:
            for _ in left:
                try:
                    statuses[await path.send(client, gw)] += 1
                except httpx.HTTPError as exc:
                    statuses[-1] += 1
                    print(f"  {path.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.sleep(0.5)  # what the gateway does after the answer (record, release) is done
        got = snapshot(gw)
    kinds = ", ".join(f"{k} {n / requests:.2f}" for k, n in got["garbage_kinds"][:8])
    if got.get("garbage_frames") and verbose:
        kinds += "; frames: " + ", ".join(f"{k} {n / requests:.2f}" for k, n in got["garbage_frames"])
    return got["garbage"] / requests, kinds or "none", statuses


def start(workdir: Path, fake_port: int, trees: list[tuple[str, Path]]) -> list[Gateway]:
    config = workdir / "policy.yaml"
    config.write_text(POLICY.format(port=fake_port, dead_port=procs.free_port()))  # nothing listens there
    out = []
    for name, tree in trees:
        env = {"HYBRIDGW_DATA_DIR": str(workdir / f"data-{name}"), "REDIS_URL": "", "HYBRIDGW_WORKERS": "1",
               "HYBRIDGW_MAX_CONNECTIONS_PER_CLIENT": "0", "PYTHONPATH": str(tree)}
        key, tight = create_key(config, env, cwd=tree), create_key(config, env, team="tight", cwd=tree)
        port, names = procs.free_port(), workdir / f"{name}.threads.json"
        proc = procs.start([sys.executable, str(ROOT / "bench" / "named_gateway.py"), str(names), "serve", "--config",
                            str(config), "--port", str(port)], env=env, cwd=tree, name=name)
        gw = Gateway(name, f"http://127.0.0.1:{port}", key, tight, proc, names)
        out.append(gw)
        procs.wait_http(f"{gw.url}/healthz", proc, timeout_s=120)
        os.kill(proc.pid, signal.SIGUSR2)  # gc.DEBUG_SAVEALL from now on
    return out


async def measure(gateways: list[Gateway], paths: list[RequestPath], requests: int, concurrency: int,
                  verbose: bool) -> None:
    for gw in gateways:  # warm-up: lazy imports, first connections, caches
        await one_path(gw, PATHS[0], 200, concurrency)
        await one_path(gw, PATHS[1], 200, concurrency)
    for path in paths:
        for gw in gateways:  # interleaved by path
            per, kinds, statuses = await one_path(gw, path, requests, concurrency, verbose)
            seen = " ".join(f"{s}×{n}" for s, n in sorted(statuses.items()))
            print(f"| {path.name} | {gw.name} | {per:.2f} | {kinds} | {seen} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH: a gateway from this source tree")
    parser.add_argument("--requests", type=int, default=400, help="requests per path")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--frames", action="store_true", help="also the frames the cycles held, by function")
    parser.add_argument("--path", action="append", default=[], help="only the paths whose name starts with this")
    args = parser.parse_args()
    trees = [(n, Path(p).resolve()) for n, p in (t.split("=", 1) for t in args.tree)] or [("hybridgw", ROOT)]
    paths = [p for p in PATHS if not args.path or any(p.name.startswith(a) for a in args.path)]
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| path | tree | objects a request found by the cyclic GC | by type (a request) | statuses |\n|---|---|---:|---|---|")
    fake, fake_port = start_fake()
    gateways: list[Gateway] = []
    with tempfile.TemporaryDirectory(prefix="hybridgw-cycles-") as tmp:
        try:
            gateways = start(Path(tmp), fake_port, trees)
            asyncio.run(measure(gateways, paths, args.requests, args.concurrency, args.frames))
        finally:
            for proc in [fake, *(g.proc for g in gateways)]:
                procs.stop(proc)
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
