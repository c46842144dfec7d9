"""Local engine server throughput: C concurrent streaming chat requests vs transformers' batch-C generate.

Starts `hybridgw engine` (SmolLM2 by default) on a free port, fires C streaming requests of N
forced tokens each (ignore_eos) over C keep-alive connections (a minimal asyncio HTTP client), and reports aggregate generated tokens/s, TTFT and
ITL p50/p95. Then stops the engine and runs ../shared/peers/hf_generate.sh at batch C on the
same GGUF in the same run, and prints the ratio.

    .venv/bin/python bench/engine_server.py [--concurrency 64] [--new-tokens 64] [--rounds 2]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import procs

PEER = Path(os.environ.get("HYBRIDGW_PEERS", "/work/shared/peers")) / "hf_generate.sh"
PROMPT = "Write a short story about a lighthouse keeper."  # the peer script's default prompt
_CONTENT = b'"delta":{"content":'  # a content delta (the first, role-only delta does not match)


@dataclass
class Result:
    ttft_s: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0


class Connection:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams: the client shares the engine's two
    cores, and httpx costs ~8 ms of CPU per engine step at 64 streams (measured), this a fraction."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_stream(self, path: str, body: bytes) -> AsyncIterator[bytes]:
        """POST and yield the chunks of a chunked (SSE) response."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), self.port,
                                                             len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200 or b"chunked" not in head.lower():
            raise RuntimeError(f"unexpected response: {head!r}")
        while True:
            size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
            data = await self.reader.readexactly(size + 2)
            if size == 0:
                return
            yield data[:-2]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def one_request(conn: Connection, model: str, new_tokens: int) -> Result:
    """One stream, read with as little client CPU as possible: a chunk that holds a content delta
    counts as one arrival; only the usage event is parsed."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}],
                       "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    result = Result()
    start = time.perf_counter()
    tail = b""
    async for data in conn.post_stream("/v1/chat/completions", body):
        if _CONTENT in data:
            now = time.perf_counter()
            if not result.chunk_times:
                result.ttft_s = now - start
            result.chunk_times.append(now)
        tail = (tail + data)[-4096:]
    usage_line = tail[tail.rindex(b'data: {'):].split(b"\n", 1)[0][6:]
    result.completion_tokens = json.loads(usage_line)["usage"]["completion_tokens"]
    return result


async def run_round(conns: list[Connection], model: str, new_tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    results = await asyncio.gather(*(one_request(conn, model, new_tokens) for conn in conns))
    wall = time.perf_counter() - start
    tokens = sum(r.completion_tokens for r in results)
    ttfts = sorted(r.ttft_s for r in results)
    itls = sorted(b - a for r in results for a, b in zip(r.chunk_times, r.chunk_times[1:]))
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "ttft_p50_s": pct(ttfts, 50), "ttft_p95_s": pct(ttfts, 95),
            "itl_p50_s": pct(itls, 50), "itl_p95_s": pct(itls, 95)}


async def run_rounds(url: str, model: str, args: argparse.Namespace) -> list[dict[str, float]]:
    """A warm-up round opens the keep-alive connections (as long-lived clients hold them), then the rounds."""
    where = urlsplit(url)
    conns = [Connection(where.hostname or "127.0.0.1", where.port or 80) for _ in range(args.concurrency)]
    try:
        await run_round(conns, model, 4)
        return [await run_round(conns, model, args.new_tokens) for _ in range(args.rounds)]
    finally:
        for conn in conns:
            conn.close()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def measure(url: str, args: argparse.Namespace) -> tuple[list[dict[str, float]], dict]:
    model = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
    rounds = asyncio.run(run_rounds(url, model, args))
    return rounds, httpx.get(f"{url}/v1/engine/state").json()


def bench_engine(args: argparse.Namespace) -> list[dict[str, float]]:
    if args.url:
        rounds, state = measure(args.url, args)
        report(rounds, state)
        return rounds
    port = procs.free_port()
    cmd = procs.python_module("gateway.cli", "engine", "--model", args.model, "--port", str(port),
                              "--max-num-seqs", str(max(args.concurrency, 1)),
                              *(["--threads", str(args.threads)] if args.threads else []), *args.engine_arg)
    url = f"http://127.0.0.1:{port}"
    with procs.running(cmd, f"{url}/health", name="bench-engine", timeout_s=600):
        rounds, state = measure(url, args)
    report(rounds, state)
    return rounds


def report(rounds: list[dict[str, float]], state: dict) -> None:
    for r in rounds:
        print(json.dumps({"engine": "hybridgw", **{k: round(v, 4) for k, v in r.items()}}), flush=True)
    print(json.dumps({"engine_state": {k: state[k] for k in ("model", "device", "kv_dtype", "num_preemptions",
                                                              "decode_tokens_per_s", "prefill_tokens_per_s",
                                                              "prefix_cache_hit_rate")}}))


def bench_peer(gguf: str, concurrency: int, new_tokens: int) -> float | None:
    cmd = [str(PEER), gguf, "--batch", str(concurrency), "--dtype", "bf16", "--new-tokens", str(new_tokens)]
    print("peer:", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        print(f"peer failed ({out.returncode}): {out.stderr[-2000:]}", file=sys.stderr)
        return None
    print(lines[-1], flush=True)
    return float(json.loads(lines[-1])["tokens_per_s"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="engine torch threads (default: the engine's)")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--peer-runs", type=int, default=2, help="peer runs; its best one is compared")
    p.add_argument("--engine-arg", action="append", default=[], help="extra `hybridgw engine` argument")
    p.add_argument("--url", default=None, help="measure a running engine at this URL instead of starting one")
    args = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared: compare only side by side)")
    rounds = bench_engine(args)
    ours = statistics.median(r["tokens_per_s"] for r in rounds)
    print(f"hybridgw engine: median {ours:.1f} generated tok/s over {len(rounds)} rounds", flush=True)
    if args.no_peer or args.model != "smollm2":
        return 0
    from local_engine.loaders.registry import smollm2_gguf_path

    # The peer's best of several runs: a stall on this shared machine must not flatter the ratio.
    runs = [bench_peer(str(smollm2_gguf_path()), args.concurrency, args.new_tokens) for _ in range(args.peer_runs)]
    peer = max((r for r in runs if r), default=None)
    if peer:
        print(f"ratio hybridgw (median) / transformers generate (best of {args.peer_runs}), batch "
              f"{args.concurrency}: {ours:.1f} / {peer:.1f} = {ours / peer:.2f}x")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
