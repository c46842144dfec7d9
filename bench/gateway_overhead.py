"""Gateway overhead, in one run: the fake OpenAI upstream direct vs through hybridgw vs through
LiteLLM Proxy. p50/p99 added latency at concurrency 1 (non-streamed: the whole body; streamed: TTFT,
the first chunk that carries content — the role-only chunk before it does not count) and req/s at
concurrency 32 (streamed, 16 chunks; "paced": the upstream sends them --gap-ms apart like a decoding
model, "unpaced": back to back, which only measures CPU per request). The load generator is
`hybridgw bench`'s raw asyncio client, runner and metric definitions (observability/bench/).

Run: .venv/bin/python -m bench.gateway_overhead [--requests 400] [--seconds 8] [--rounds 3] [--no-litellm]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.run_report import finish
from bench.stack import create_key, start_fake, start_litellm
from observability.bench.arrivals import ClosedLoop
from observability.bench.client import Client, Sent, Target
from observability.bench.metrics import Stats, stats, summarize, ttft
from observability.bench.records import RequestRecord
from observability.bench.runner import RunSpec, Sink, run
from tests.support import procs

CHAT = [{"role": "user", "content": "say something short"}]
MAX_RPS = 10_000  # sizes the list of requests a timed throughput run draws from


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    key: str
    model: str


def sent(server: Server, stream: bool, gap_ms: float = 0.0) -> Sent:
    data: dict[str, object] = {"model": server.model, "messages": CHAT, "stream": stream}
    if gap_ms:  # the fake upstream reads its pacing from `user`, a field every proxy passes on
        data["user"] = f"fake:delay_ms={gap_ms}"
    return Sent(json.dumps(data).encode(), server.key, RequestRecord(0, "overhead", "bench", 0, 0, 0.0, 0.0))


def client(server: Server) -> Client:
    """Keep-alive connections to one server, kept for the whole run (as a long-lived client holds them)."""
    return Client(Target.parse(f"http://127.0.0.1:{server.port}/v1", "chat"), {}, idle_timeout_s=60,
                  whole_body=True)


async def closed_loop(server: Server, pool: Client, one: Sent, concurrency: int, count: int,
                      seconds: float | None, errors: Counter[str]) -> list[RequestRecord]:
    """`count` requests (or as many as `seconds` allow) at `concurrency`; failures are counted, not hidden."""
    sink = Sink()
    await run(pool, [], [one] * count, RunSpec(ClosedLoop(concurrency), duration_s=seconds), sink)
    errors.update(f"{server.name}: {r.error}" for r in sink.records if r.error)
    return sink.records


async def latencies(server: Server, pool: Client, stream: bool, n: int, errors: Counter[str]) -> list[float]:
    """Concurrency 1: TTFT per request (non-streamed, the whole body: TTFT = E2E)."""
    records = await closed_loop(server, pool, sent(server, stream), 1, n, None, errors)
    return [v for r in records if r.ok and (v := ttft(r)) is not None]


async def throughput(server: Server, pool: Client, seconds: float, errors: Counter[str],
                     gap_ms: float = 0.0) -> float:
    """Successful streamed requests per second at concurrency 32 over `seconds`."""
    one = sent(server, True, gap_ms)
    records = await closed_loop(server, pool, one, 32, int(seconds * MAX_RPS), seconds, errors)
    return summarize(records).request_throughput


async def measure(servers: list[Server], n: int, seconds: float, rounds: int,
                  gap_ms: float, errors: Counter[str]) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {s.name: {"plain": [], "ttft": [], "rps": [], "sat": []}
                                                  for s in servers}
    pools = {s.name: client(s) for s in servers}
    try:
        for s in servers:  # warm-up: connections, caches, lazy imports; its failures count too
            await latencies(s, pools[s.name], False, 50, errors)
            await throughput(s, pools[s.name], 1.0, errors)
        for _ in range(rounds):  # rounds interleave the servers, so machine noise hits all of them alike
            for s in servers:
                pool, r = pools[s.name], results[s.name]
                r["plain"] += await latencies(s, pool, False, n, errors)
                r["ttft"] += await latencies(s, pool, True, n, errors)
                r["rps"].append(await throughput(s, pool, seconds, errors, gap_ms))
                r["sat"].append(await throughput(s, pool, seconds, errors))
    finally:
        for pool in pools.values():
            pool.close()
    return results


def start_stack(workdir: Path, with_litellm: bool) -> tuple[list[Server], list[procs.Proc], list[int]]:
    fake, fake_port = start_fake("--chunks", "16", name="bench-fake")
    config = workdir / "policy.yaml"
    config.write_text(f"backends:\n  up: {{kind: openai, base_url: 'http://127.0.0.1:{fake_port}/v1'}}\n"
                      "models:\n  m: {deployments: [{backend: up, model: m}]}\nteams:\n  bench: {}\n")
    env = {"HYBRIDGW_DATA_DIR": str(workdir / "data")}
    key = create_key(config, env)
    gw_port = procs.free_port()
    gw = procs.start([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port",
                      str(gw_port)], env=env, name="bench-gateway")
    procs.wait_http(f"http://127.0.0.1:{gw_port}/healthz", gw)
    targets = [Server("direct", fake_port, "none", "m"), Server("hybridgw", gw_port, key, "m")]
    peer_pids: list[int] = []
    if with_litellm:
        try:
            pid, port, peer_key = start_litellm(fake_port)
        except BaseException:  # no peer: what this run started must not outlive it
            for proc in (gw, fake):
                procs.stop(proc)
            raise
        peer_pids.append(pid)
        targets.append(Server("litellm-proxy", port, peer_key, "m"))
    return targets, [gw, fake], peer_pids


def _p50_p99_ms(s: Stats | None) -> tuple[float, float]:
    return (s.p50 * 1e3, s.p99 * 1e3) if s else (float("nan"), float("nan"))


def report(results: dict[str, dict[str, list[float]]]) -> str:
    direct = results["direct"]
    lines = [("| path | non-streamed p50 / p99 (ms) | added p50 / p99 | streamed TTFT (first content) p50 / p99 (ms) "
              "| added p50 / p99 | req/s at 32, paced | vs direct | req/s at 32, unpaced | vs direct |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        row = [name]
        for kind in ("plain", "ttft"):
            (p50, p99), (d50, d99) = _p50_p99_ms(stats(r[kind])), _p50_p99_ms(stats(direct[kind]))
            row += [f"{p50:.2f} / {p99:.2f}", "—" if name == "direct" else f"+{p50 - d50:.2f} / +{p99 - d99:.2f}"]
        for kind in ("rps", "sat"):
            rps, base = statistics.median(r[kind]), statistics.median(direct[kind])
            row += [f"{rps:.0f}", f"{rps / base:.0%}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    os.environ.setdefault("HYBRIDGW_WORKERS", "1")  # one gateway process: per-core figures, as before --workers
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per latency sample per round")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each throughput run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, default=12.0,
                        help="upstream gap between the 16 chunks in the paced throughput run")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM Proxy peer")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared: compare only side by side)")
    errors: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="hybridgw-bench-") as tmp:
        targets, servers, peer_pids = start_stack(Path(tmp), not args.no_litellm)
        try:
            results = asyncio.run(measure(targets, args.requests, args.seconds, args.rounds, args.gap_ms,
                                          errors))
        finally:
            for pid in peer_pids:
                os.kill(pid, 15)
            for proc in servers:
                procs.stop(proc)
    print(report(results))
    return finish(errors)


if __name__ == "__main__":
    raise SystemExit(main())
