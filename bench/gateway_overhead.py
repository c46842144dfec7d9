"""Gateway overhead, in one run: the fake OpenAI upstream direct vs through hybridgw vs through
LiteLLM Proxy. p50/p99 added latency at concurrency 1 (non-streamed; streamed TTFT) and req/s at
concurrency 32 (streamed, 16 chunks; "paced": the upstream sends them --gap-ms apart like a decoding
model, "unpaced": back to back, which only measures CPU per request). A raw asyncio HTTP/1.1 client
keeps the load generator light.

Run: .venv/bin/python -m bench.gateway_overhead [--requests 400] [--seconds 8] [--rounds 3] [--no-litellm]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import procs

PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "litellm_proxy.sh"
CHAT = [{"role": "user", "content": "say something short"}]


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    key: str
    model: str


class Conn:
    """One keep-alive HTTP/1.1 connection; `post` returns (time to first body byte, total time)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, target: Target, body: bytes) -> tuple[float, float]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                f"authorization: Bearer {target.key}\r\ncontent-length: {len(body)}\r\n\r\n").encode()
        start = time.perf_counter()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if b" 200 " not in status_line:
            raise RuntimeError(f"{target.name}: {status_line!r}")
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
            first = time.perf_counter() - start
            return first, first
        first = 0.0
        while True:  # chunked transfer (streams)
            size = int((await self.reader.readline()).strip(), 16)
            await self.reader.readexactly(size + 2)
            if not first:
                first = time.perf_counter() - start
            if size == 0:
                return first, time.perf_counter() - start

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def body(target: Target, stream: bool, gap_ms: float = 0.0) -> bytes:
    data: dict[str, object] = {"model": target.model, "messages": CHAT, "stream": stream}
    if gap_ms:  # the fake upstream reads its pacing from `user`, a field every proxy passes on
        data["user"] = f"fake:delay_ms={gap_ms}"
    return json.dumps(data).encode()


async def latencies(target: Target, stream: bool, n: int) -> list[float]:
    conn, payload, out = Conn(target.port), body(target, stream), []
    for _ in range(n):
        first, _total = await conn.post(target, payload)
        out.append(first)
    conn.close()
    return out


async def throughput(target: Target, concurrency: int, seconds: float, gap_ms: float = 0.0) -> float:
    payload, done = body(target, True, gap_ms), 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        conn = Conn(target.port)
        while time.perf_counter() < deadline:
            await conn.post(target, payload)
            done += 1
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start_stack(workdir: Path, with_litellm: bool) -> tuple[list[Target], list[procs.Proc], list[int]]:
    fake_port, gw_port = procs.free_port(), procs.free_port()
    fake = procs.start(procs.python_module("tests.fakes.openai_upstream", "--port", str(fake_port),
                                           "--chunks", "16"), name="bench-fake")
    procs.wait_http(f"http://127.0.0.1:{fake_port}/health", fake)
    config = workdir / "policy.yaml"
    config.write_text(f"backends:\n  up: {{kind: openai, base_url: 'http://127.0.0.1:{fake_port}/v1'}}\n"
                      "models:\n  m: {deployments: [{backend: up, model: m}]}\nteams:\n  bench: {}\n")
    env = {"HYBRIDGW_DATA_DIR": str(workdir / "data")}
    key = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "--config", str(config), "create",
                          "--team", "bench"],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout.strip()
    gw = procs.start([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port",
                      str(gw_port)], env=env, name="bench-gateway")
    procs.wait_http(f"http://127.0.0.1:{gw_port}/healthz", gw)
    targets = [Target("direct", fake_port, "none", "m"), Target("hybridgw", gw_port, key, "m")]
    peer_pids: list[int] = []
    if with_litellm:
        lp = procs.free_port()
        out = subprocess.run(["bash", str(PEER), f"http://127.0.0.1:{fake_port}/v1", str(lp)],
                             capture_output=True, text=True, check=True).stdout
        fields = dict(part.split("=", 1) for part in out.split())
        peer_pids.append(int(fields["pid"]))
        targets.append(Target("litellm-proxy", lp, fields["key"], "m"))
    return targets, [gw, fake], peer_pids


async def measure(targets: list[Target], n: int, seconds: float, rounds: int,
                  gap_ms: float) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {t.name: {"plain": [], "ttft": [], "rps": [], "sat": []}
                                                  for t in targets}
    for t in targets:  # warm-up: connections, caches, JIT-less but lazy imports
        await latencies(t, False, 50)
        await throughput(t, 32, 1.0)
    for _ in range(rounds):  # rounds interleave the targets, so machine noise hits all of them alike
        for t in targets:
            results[t.name]["plain"] += await latencies(t, False, n)
            results[t.name]["ttft"] += await latencies(t, True, n)
            results[t.name]["rps"].append(await throughput(t, 32, seconds, gap_ms))
            results[t.name]["sat"].append(await throughput(t, 32, seconds))
    return results


def report(results: dict[str, dict[str, list[float]]]) -> str:
    direct = results["direct"]
    lines = ["| path | non-streamed p50 / p99 (ms) | added p50 / p99 | streamed TTFT p50 / p99 (ms) | added p50 / p99 "
             "| req/s at 32, paced | vs direct | req/s at 32, unpaced | vs direct |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        row = [name]
        for kind in ("plain", "ttft"):
            p50, p99 = pct(r[kind], 50) * 1e3, pct(r[kind], 99) * 1e3
            d50, d99 = pct(direct[kind], 50) * 1e3, pct(direct[kind], 99) * 1e3
            row += [f"{p50:.2f} / {p99:.2f}", "—" if name == "direct" else f"+{p50 - d50:.2f} / +{p99 - d99:.2f}"]
        for kind in ("rps", "sat"):
            rps, base = statistics.median(r[kind]), statistics.median(direct[kind])
            row += [f"{rps:.0f}", f"{rps / base:.0%}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per latency sample per round")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each throughput run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, default=12.0,
                        help="upstream gap between the 16 chunks in the paced throughput run")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM Proxy peer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hybridgw-bench-") as tmp:
        targets, servers, peer_pids = start_stack(Path(tmp), not args.no_litellm)
        try:
            results = asyncio.run(measure(targets, args.requests, args.seconds, args.rounds, args.gap_ms))
        finally:
            for pid in peer_pids:
                os.kill(pid, 15)
            for proc in servers:
                procs.stop(proc)
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
