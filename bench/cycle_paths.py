"""Reference cycles per request on each request path, not just the happy one: one gateway per tree (full path, as
bench/thread_cpu_split.py starts it, under bench/named_gateway.py with gc.DEBUG_SAVEALL), then per path N requests
at C in flight and what the cyclic GC found unreachable (a full collection before and after each path), by type.
Paths: non-streamed, streamed, upstream 500 (both), an in-band stream error, the upstream dropping the connection
mid-stream, the client hanging up mid-stream or before a non-streamed answer, the upstream's first-byte and
between-chunks timeouts, an unreachable upstream; the refusals before any call: a bad key (401), a body that is no
JSON or fails the schema, an unknown model, our engine asked for JSON output or a tool call (400, or passed over),
the rpm and tpm limits and a hard USD budget (429); our engine (`hybridgw engine --model tiny-random`, one process
for all trees) down, or refusing (its 400); an https upstream through HTTPS_PROXY (a proxy process) whose TLS
handshake fails after the tunnel, or whose tunnel the proxy cuts (its upstream down). The main gateway keeps its circuits closed
(each path's own cost, not an open circuit's 503s); a second gateway per tree opens one at its first failure, for
the circuit paths (every target open: 503; the first target open: passed over to the next).

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
from tests.support import procs, tunnel_procs

ROOT = Path(__file__).resolve().parents[1]
POLICY = """
backends:
  up: {{kind: openai, base_url: 'http://127.0.0.1:{port}/v1', price: {{input_usd_per_mtok: 1, output_usd_per_mtok: 2}}}}
  slow: {{kind: openai, base_url: 'http://127.0.0.1:{port}/v1', timeouts: {{first_byte_s: 0.05, between_chunks_s: 0.05}}}}
  dead: {{kind: openai, base_url: 'http://127.0.0.1:{dead_port}/v1'}}
  engine: {{kind: engine, base_url: 'http://127.0.0.1:{engine_port}/v1', state: none}}  # not polled: requests only
  engine_down: {{kind: engine, base_url: 'http://127.0.0.1:{dead_port}/v1', state: none}}
  tls: {{kind: openai, base_url: 'https://127.0.0.1:{tls_port}/v1'}}  # through HTTPS_PROXY; no TLS there
  tunnel_dead: {{kind: openai, base_url: 'https://127.0.0.1:{dead_port}/v1'}}  # the proxy answers 200, then closes
models:
  m: {{deployments: [{{backend: up, model: m}}]}}
  slow: {{deployments: [{{backend: slow, model: m}}]}}
  dead: {{deployments: [{{backend: dead, model: m}}]}}
  eng: {{deployments: [{{backend: engine, model: tiny-random}}]}}
  eng_then_up: {{deployments: [{{backend: engine, model: tiny-random}}, {{backend: up, model: m}}]}}
  eng_down: {{deployments: [{{backend: engine_down, model: tiny-random}}]}}
  tls: {{deployments: [{{backend: tls, model: m}}]}}
  tunnel_dead: {{deployments: [{{backend: tunnel_dead, model: m}}]}}
teams:
  bench:
    limits: {{requests_per_minute: 100000000, tokens_per_minute: 100000000000}}
    budget: {{usd_per_day: 1000000}}
  tight:
    limits: {{requests_per_minute: 1}}
  few_tokens:
    limits: {{tokens_per_minute: 5}}
  broke:
    budget: {{usd_per_day: 0.000000001, on_exceed: reject}}
health: {{failure_threshold: 1000000000}}  # the error paths' own cost, not an open circuit's 503s
"""
# A tree's second gateway: a circuit opens at the first failure and stays open (an hour's cooldown).
CIRCUIT_POLICY = """
backends:
  up: {{kind: openai, base_url: 'http://127.0.0.1:{port}/v1'}}
  dead: {{kind: openai, base_url: 'http://127.0.0.1:{dead_port}/v1'}}
  dead_first: {{kind: openai, base_url: 'http://127.0.0.1:{dead_port}/v1'}}
models:
  m: {{deployments: [{{backend: up, model: m}}]}}
  open: {{deployments: [{{backend: dead, model: m}}]}}
  first_open: {{deployments: [{{backend: dead_first, model: m}}, {{backend: up, model: m}}]}}
teams:
  bench: {{}}
health: {{failure_threshold: 1, cooldown_s: 3600, max_cooldown_s: 3600}}
"""
TEAMS = ("bench", "tight", "few_tokens", "broke")
JSON_OUTPUT = {"response_format": {"type": "json_object"}}
TOOL_CALL = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
             "tool_choice": "required"}
CHAT = [{"role": "user", "content": "say something short"}]


@dataclass(frozen=True)
class Gateway:
    name: str
    url: str
    keys: dict[str, str]  # team -> one of its keys (TEAMS: "tight", "few_tokens" and "broke" are refused)
    proc: procs.Proc
    names: Path  # bench/named_gateway.py's output


@dataclass(frozen=True)
class RequestPath:
    name: str
    send: Callable[[httpx.AsyncClient, Gateway], Awaitable[int]]  # one request; its status
    circuit: bool = False  # sent to the tree's second gateway (CIRCUIT_POLICY)


def _body(stream: bool, knobs: str, model: str = "m", extra: dict | None = None) -> bytes:
    return json.dumps({"model": model, "messages": CHAT, "max_tokens": 16, "stream": stream,
                       "user": f"fake:{knobs}", **(extra or {})}).encode()


def _post(stream: bool, knobs: str, team: str = "bench", raw: bytes | None = None, model: str = "m",
          extra: dict | None = None, key: str | None = None) -> Callable:
    body = raw if raw is not None else _body(stream, knobs, model, extra)

    async def send(client: httpx.AsyncClient, gw: Gateway) -> int:
        headers = {"authorization": f"Bearer {key or gw.keys[team]}", "content-type": "application/json"}
        async with client.stream("POST", f"{gw.url}/v1/chat/completions", content=body, headers=headers) as r:
            await r.aread()
            return r.status_code
    return send


def _hang_up(knobs: str) -> Callable:
    """A stream the client leaves after its first bytes (the connection is closed, not reused)."""
    async def send(client: httpx.AsyncClient, gw: Gateway) -> int:
        headers = {"authorization": f"Bearer {gw.keys['bench']}", "content-type": "application/json"}
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
    RequestPath("limit refusal (429)", _post(False, "ttft_ms=2", team="tight")),
    RequestPath("body not JSON (400)", _post(False, "", raw=b'{"model": "m", "messages": [')),
    RequestPath("body fails the schema (400)", _post(False, "", raw=b'{"model": "m", "messages": "hi", "max_tokens": -1}')),
    # refused before any upstream call
    RequestPath("bad key (401)", _post(False, "", key="sk-not-a-key")),
    RequestPath("unknown model (404)", _post(False, "", model="no-such-model")),
    RequestPath("tpm limit (429)", _post(False, "", team="few_tokens")),
    RequestPath("hard USD budget (429)", _post(False, "", team="broke")),
    RequestPath("JSON output asked of engine and up: engine passed over (200)",
                _post(False, "ttft_ms=2", model="eng_then_up", extra=JSON_OUTPUT)),
    # our engine's error paths: its refusal (the only target), and no engine listening
    RequestPath("engine refuses JSON output (400)", _post(False, "", model="eng", extra=JSON_OUTPUT)),
    RequestPath("engine refuses JSON output, streamed (400)", _post(True, "", model="eng", extra=JSON_OUTPUT)),
    RequestPath("engine refuses a tool call (400)", _post(False, "", model="eng", extra=TOOL_CALL)),
    RequestPath("engine down (502)", _post(False, "", model="eng_down")),
    RequestPath("TLS fails after the proxy's tunnel (502)", _post(False, "", model="tls")),
    RequestPath("upstream down behind the proxy: tunnel cut in the TLS handshake (502)",
                _post(False, "", model="tunnel_dead")),
    # the second gateway's open circuits
    RequestPath("circuit open on every target (503)", _post(False, "", model="open"), circuit=True),
    RequestPath("first target's circuit open, passed over (200)", _post(False, "ttft_ms=2", model="first_open"),
                circuit=True),
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


def _gateway(workdir: Path, name: str, tree: Path, config: Path, env: dict[str, str], teams: tuple[str, ...]) -> Gateway:
    keys = {team: create_key(config, env, team=team, cwd=tree) for team in teams}
    port, names = procs.free_port(), workdir / f"{name}.threads.json"
    proc = procs.start([sys.executable, str(ROOT / "bench" / "named_gateway.py"), str(names), "serve", "--config",
                        str(config), "--port", str(port)], env=env, cwd=tree, name=name)
    gw = Gateway(name, f"http://127.0.0.1:{port}", keys, proc, names)
    procs.wait_http(f"{gw.url}/healthz", proc, timeout_s=120)
    os.kill(proc.pid, signal.SIGUSR2)  # gc.DEBUG_SAVEALL from now on
    return gw


def start(workdir: Path, ports: dict[str, int], trees: list[tuple[str, Path]],
          started: list[tuple[Gateway, Gateway]]) -> None:
    """Per tree, its main gateway and its circuit one (appended to `started` as they come up)."""
    config, circuit = workdir / "policy.yaml", workdir / "circuit.yaml"
    config.write_text(POLICY.format(**ports))
    circuit.write_text(CIRCUIT_POLICY.format(**ports))
    for name, tree in trees:
        env = {"HYBRIDGW_DATA_DIR": str(workdir / f"data-{name}"), "REDIS_URL": "", "HYBRIDGW_WORKERS": "1",
               "HYBRIDGW_MAX_CONNECTIONS_PER_CLIENT": "0", "PYTHONPATH": str(tree),
               "HTTPS_PROXY": f"http://127.0.0.1:{ports['proxy_port']}", "NO_PROXY": ""}
        main_gw = _gateway(workdir, name, tree, config, env, TEAMS)
        env["HYBRIDGW_DATA_DIR"] = str(workdir / f"data-{name}-circuit")
        started.append((main_gw, _gateway(workdir, f"{name}-circuit", tree, circuit, env, ("bench",))))


async def measure(gateways: list[tuple[Gateway, Gateway]], paths: list[RequestPath], requests: int,
                  concurrency: int, verbose: bool) -> None:
    for gw, circuit in gateways:  # warm-up: lazy imports, first connections, caches; the circuits opened
        await one_path(gw, PATHS[0], 200, concurrency)
        await one_path(gw, PATHS[1], 200, concurrency)
        for path in PATHS:
            if path.circuit:
                await one_path(circuit, path, 50, concurrency)
    for path in paths:
        for gw, circuit in gateways:  # interleaved by path
            per, kinds, statuses = await one_path(circuit if path.circuit else gw, path, requests, concurrency, verbose)
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
    (proxy, proxy_port), (not_tls, tls_port) = tunnel_procs.start("proxy"), tunnel_procs.start("garbage-tls")
    engine_port = procs.free_port()
    engine = procs.start(procs.python_module("gateway.cli", "engine", "--model", "tiny-random", "--port",
                                             str(engine_port)), env={"PYTHONPATH": str(ROOT)}, cwd=ROOT, name="engine")
    ports = {"port": fake_port, "dead_port": procs.free_port(), "proxy_port": proxy_port, "tls_port": tls_port,
             "engine_port": engine_port}
    gateways: list[tuple[Gateway, Gateway]] = []
    with tempfile.TemporaryDirectory(prefix="hybridgw-cycles-") as tmp:
        try:
            procs.wait_http(f"http://127.0.0.1:{engine_port}/health", engine, timeout_s=240)
            start(Path(tmp), ports, trees, gateways)  # nothing listens on dead_port
            asyncio.run(measure(gateways, paths, args.requests, args.concurrency, args.frames))
        finally:
            for proc in [fake, proxy, not_tls, engine, *(g.proc for pair in gateways for g in pair)]:
                procs.stop(proc)
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
