"""The upstream HTTP client's own CPU per call, in one run: httpx (8 small pooled clients, as the
gateway had them) vs aiohttp (one pooled session) vs ours (gateway/backends/upstream_pool.py: "lean"),
non-streamed and streamed (16 chunks), against the fake upstream, concurrency 8, the CPU of this process
only (the fake runs in its own); rounds interleave the clients.

Run: .venv/bin/python -m bench.upstream_clients [--requests 2000] [--rounds 3] [--clients httpx,aiohttp,lean]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson

from gateway.backends.upstream_pool import Pool, Target, request_head
from tests.support import procs

BODY = {"model": "m", "messages": [{"role": "user", "content": "say something short"}], "max_tokens": 16}
Call = Callable[[bool], Awaitable[int]]


def httpx_caller(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=2, max_keepalive_connections=2))
               for _ in range(8)]
    load = [0] * 8

    async def call(stream: bool) -> int:
        i = load.index(min(load))
        load[i] += 1
        try:
            request = clients[i].build_request("POST", url, content=orjson.dumps({**BODY, "stream": stream}),
                                               headers={"content-type": "application/json"})
            response = await clients[i].send(request, stream=True)
            n = 0
            async for piece in response.aiter_bytes():
                n += piece.count(b"data: ")
            await response.aclose()
            return n
        finally:
            load[i] -= 1

    async def close() -> None:
        for c in clients:
            await c.aclose()

    return call, close


def aiohttp_caller(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16, keepalive_timeout=4.0),
                                    skip_auto_headers=("user-agent",))

    async def call(stream: bool) -> int:
        async with session.post(url, data=orjson.dumps({**BODY, "stream": stream}),
                                headers={"content-type": "application/json"}) as response:
            n = 0
            async for piece in response.content.iter_any():
                n += piece.count(b"data: ")
            return n

    return call, session.close


def lean_caller(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """Our client as gateway/backends/openai_http.py drives it (pool, one write, head, reads to the end)."""
    parts = urlsplit(url)
    where = Target(parts.hostname or "", parts.port or 80, None, None)
    head = request_head(where, parts.path, {"content-type": "application/json", "accept-encoding": "gzip, deflate"})
    pools: list[Pool] = []

    async def call(stream: bool) -> int:
        if not pools:
            pools.append(Pool(where, 16, 5.0))
        pool = pools[0]
        conn = pool.take_idle()
        if conn is None:
            conn, _ = await pool.acquire()
        body = orjson.dumps({**BODY, "stream": stream})
        conn.send(b"%scontent-length: %d\r\n\r\n%s" % (head, len(body), body), stream)
        try:
            await conn.head()
            n = 0
            while piece := await conn.read_any():
                n += piece.count(b"data: ")
            return n
        finally:
            pool.release(conn)

    async def close() -> None:
        for pool in pools:
            pool.close()

    return call, close


CALLERS = {"httpx": httpx_caller, "aiohttp": aiohttp_caller, "lean": lean_caller}


async def cpu_per_call(call: Call, stream: bool, count: int, concurrency: int = 8) -> float:
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call(stream)

    before = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - before) / count


async def measure(url: str, requests: int, rounds: int, clients: list[str]) -> dict[str, dict[bool, list[float]]]:
    made = {name: CALLERS[name](url) for name in clients}
    out: dict[str, dict[bool, list[float]]] = {name: {False: [], True: []} for name in made}
    try:
        for call, _ in made.values():
            await cpu_per_call(call, False, 200)
            await cpu_per_call(call, True, 100)
        for _ in range(rounds):
            for name, (call, _) in made.items():
                for stream in (False, True):
                    out[name][stream].append(await cpu_per_call(call, stream, requests))
    finally:
        for _, close in made.values():
            await close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="httpx,aiohttp,lean", help="comma-separated; the first is the base")
    args = parser.parse_args()
    clients = args.clients.split(",")
    port = procs.free_port()
    fake = procs.start(procs.python_module("tests.fakes.openai_upstream", "--port", str(port), "--chunks", "16"),
                       name="fake")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/health", fake)
        import uvloop

        out = uvloop.run(measure(f"http://127.0.0.1:{port}/v1/chat/completions", args.requests, args.rounds, clients))
    finally:
        procs.stop(fake)
    print(f"| client | CPU per non-streamed call (µs) | vs {clients[0]} | CPU per streamed call, 16 chunks (µs) "
          f"| vs {clients[0]} |")
    print("|---|---|---|---|---|")
    base = {s: statistics.median(out[clients[0]][s]) for s in (False, True)}
    for name, r in out.items():
        plain, streamed = statistics.median(r[False]), statistics.median(r[True])
        print(f"| {name} | {plain * 1e6:.0f} | {plain / base[False]:.2f}× | {streamed * 1e6:.0f} "
              f"| {streamed / base[True]:.2f}× |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
