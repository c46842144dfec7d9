"""Issue #15's performance bars, side by side in one run: the fake upstream direct vs hybridgw (one
process, full path on: auth, routing, rpm + tpm limits, a USD budget, the SQLite ledger, the access log,
tracing exported over OTLP to a receiver that discards) vs LiteLLM Proxy, all against one fake upstream
answering after 20 ms. Per round, interleaved: added latency at concurrency 1 (non-streamed), throughput
and gateway CPU at concurrency 64 (non-streamed: requests per gateway CPU-second = per core), and
512 concurrent 16-chunk streams paced --gap-ms apart (inter-chunk gaps at the client, CPU per relayed
frame: gateway CPU / (streams × 17 frames: the role chunk + 16 content chunks)).

Run: .venv/bin/python -m bench.issue15_bars [--seconds 5] [--rounds 3] [--gap-ms 20] [--no-litellm]
     [--tree NAME=PATH ...] [--streams-only | --latency-only] [--workers N]
--tree: one hybridgw per source tree (run from it, its own data dir), measured in turn in each round, so two
trees are compared side by side (default: this checkout, named hybridgw); --streams-only: the 512 paced
streams alone (no latency or throughput runs); --latency-only: the added latency at 1 in flight alone.
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
from collections.abc import Callable
from pathlib import Path

from bench.gateway_overhead import MAX_RPS, Server, client, closed_loop
from bench.otlp_discard import start_discard
from bench.run_report import finish
from bench.stack import create_key, start_fake, start_litellm
from bench.workers_throughput import POLICY, UPSTREAM_MS
from observability.bench.client import Client, Sent
from observability.bench.metrics import itls, stats, ttft
from observability.bench.records import RequestRecord
from tests.support import procs

CHUNKS = 16
STREAMS = 512
THROUGHPUT_CONCURRENCY = 64


def request(server: Server, stream: bool, gap_ms: float) -> Sent:
    knobs = f"fake:ttft_ms={UPSTREAM_MS}" + (f";delay_ms={gap_ms};chunks={CHUNKS}" if stream else "")
    body = {"model": server.model, "messages": [{"role": "user", "content": "say something short"}],
            "max_tokens": CHUNKS, "stream": stream, "user": knobs}  # every proxy passes `user` on
    return Sent(json.dumps(body).encode(), server.key, RequestRecord(0, "bars", "bench", 0, 0, 0.0, 0.0))


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (LiteLLM Proxy forks its server)."""
    tick, parents, cpu = os.sysconf("SC_CLK_TCK"), {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    family, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    return sum(cpu.get(p, 0.0) for p in family)


def start_stack(workdir: Path, otlp_url: str, with_litellm: bool,
                trees: list[tuple[str, Path | None]]) -> tuple[list[Server], dict[str, int], list]:
    fake, fake_port = start_fake()
    config = workdir / "policy.yaml"
    config.write_text(POLICY.format(port=fake_port))
    servers, pids, started = [Server("direct", fake_port, "none", "m")], {}, [fake]
    for name, tree in trees:
        env = {"HYBRIDGW_DATA_DIR": str(workdir / f"data-{name}"), "REDIS_URL": "",
               "HYBRIDGW_WORKERS": os.environ.get("HYBRIDGW_WORKERS", "1"),
               "HYBRIDGW_TRACES": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_url,
               "HYBRIDGW_MAX_CONNECTIONS_PER_CLIENT": "0"}  # one client address opens the 512 streams (as a proxy would)
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        key = create_key(config, env, cwd=tree)
        port = procs.free_port()
        gw = procs.start([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
                         env=env, cwd=tree, name=name)
        started.append(gw)
        try:
            procs.wait_http(f"http://127.0.0.1:{port}/healthz", gw, timeout_s=120)
        except BaseException:
            for proc in started:
                procs.stop(proc)
            raise
        servers.append(Server(name, port, key, "m"))
        pids[name] = gw.popen.pid
    if with_litellm:
        try:
            pid, peer_port, peer_key = start_litellm(fake_port)
        except BaseException:  # no peer: what this run started must not outlive it
            for proc in started:
                procs.stop(proc)
            raise
        pids["litellm-proxy"] = pid
        servers.append(Server("litellm-proxy", peer_port, peer_key, "m"))
    return servers, pids, started


async def measure(servers: list[Server], pids: dict[str, int], seconds: float, rounds: int, gap_ms: float,
                  latency_n: int, errors: Counter[str], streams_only: bool = False,
                  latency_only: bool = False) -> dict[str, dict[str, list[float]]]:
    out = {s.name: {k: [] for k in ("lat", "rps", "per_cpu", "gaps", "frame_us", "streams")} for s in servers}
    pools = {s.name: client(s) for s in servers}
    cpu: Callable[[str], float] = lambda name: tree_cpu_s(pids[name]) if name in pids else 0.0  # noqa: E731
    try:
        for s in servers:  # warm-up: connections, caches, lazy imports
            await closed_loop(s, pools[s.name], request(s, False, 0), 16, 200, None, errors)
            await closed_loop(s, pools[s.name], request(s, True, gap_ms), 64, 128, None, errors)
        for _ in range(rounds):  # interleaved, so the machine's noise hits every server alike
            for s in servers:
                r, pool = out[s.name], pools[s.name]
                if streams_only:
                    await _streams(s, pool, r, pids, cpu, gap_ms, errors)
                    continue
                records = await closed_loop(s, pool, request(s, False, 0), 1, latency_n, None, errors)
                r["lat"] += [v for x in records if x.ok and (v := ttft(x)) is not None]
                if latency_only:
                    continue
                before = cpu(s.name)
                records = await closed_loop(s, pool, request(s, False, 0), THROUGHPUT_CONCURRENCY,
                                            int(seconds * MAX_RPS), seconds, errors)
                done = sum(1 for x in records if x.ok)
                r["rps"].append(done / seconds)
                if s.name in pids:
                    r["per_cpu"].append(done / max(cpu(s.name) - before, 1e-9))
                await _streams(s, pool, r, pids, cpu, gap_ms, errors)
    finally:
        for pool in pools.values():
            pool.close()
    return out


async def _streams(s: Server, pool: Client, r: dict[str, list[float]], pids: dict[str, int],
                   cpu: Callable[[str], float], gap_ms: float, errors: Counter[str]) -> None:
    """512 paced streams at once: the client's inter-chunk gaps, and the gateway's CPU per relayed frame."""
    before = cpu(s.name)
    records = await closed_loop(s, pool, request(s, True, gap_ms), STREAMS, STREAMS, None, errors)
    ok = [x for x in records if x.ok]
    r["gaps"] += [g for x in ok for g in itls(x)]
    r["streams"].append(len(ok))
    if s.name in pids and ok:
        r["frame_us"].append((cpu(s.name) - before) / (len(ok) * (CHUNKS + 1)) * 1e6)


def report(results: dict[str, dict[str, list[float]]], gap_ms: float) -> str:
    med = lambda v: statistics.median(v) if v else float("nan")  # noqa: E731
    d_lat, d_gap = stats(results["direct"]["lat"]), stats(results["direct"]["gaps"])
    lines = [f"| path | latency at 1 in flight p50 / p99 (ms) | added p50 / p99 (ms) | req/s at {THROUGHPUT_CONCURRENCY} "
             f"| req per gateway CPU-second (per core) | {STREAMS} streams: inter-chunk gap p50 / p99 (ms, paced "
             f"{gap_ms:g}) | added gap p99 (ms) | CPU per relayed frame (µs) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lat, gap = stats(r["lat"]), stats(r["gaps"])
        if gap is None and lat is None:
            lines.append(f"| {name} | (no successful requests) |||||||")
            continue
        direct = name == "direct"
        per_cpu, frame_us = med(r["per_cpu"]), med(r["frame_us"])
        if lat is None or d_lat is None:  # --streams-only
            lat_cells = "— | — | — | —"
        else:
            lat_cells = (f"{lat.p50 * 1e3:.2f} / {lat.p99 * 1e3:.2f} | "
                         f"{'—' if direct else f'+{(lat.p50 - d_lat.p50) * 1e3:.2f} / +{(lat.p99 - d_lat.p99) * 1e3:.2f}'} | "
                         f"{med(r['rps']):.0f} ({' / '.join(f'{v:.0f}' for v in r['rps'])}) | "
                         f"{'—' if direct else f'{per_cpu:.0f}'}")
        if gap is None or d_gap is None:  # --latency-only
            lines.append(f"| {name} | {lat_cells} | — | — | — |")
            continue
        frames = " / ".join(f"{v:.0f}" for v in r["frame_us"])
        lines.append(
            f"| {name} | {lat_cells} | {gap.p50 * 1e3:.1f} / {gap.p99 * 1e3:.1f} | "
            f"{'—' if direct else f'+{(gap.p99 - d_gap.p99) * 1e3:.1f}'} | "
            f"{'—' if direct else f'{frame_us:.0f} ({frames})'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, default=20.0, help="upstream gap between a stream's chunks")
    parser.add_argument("--latency-requests", type=int, default=200, help="per round, at concurrency 1")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH: a hybridgw from this source tree")
    parser.add_argument("--streams-only", action="store_true", help="only the 512 paced streams")
    parser.add_argument("--latency-only", action="store_true", help="only the added latency at 1 in flight")
    parser.add_argument("--workers", type=int, default=1, help="hybridgw serve --workers (each tree)")
    args = parser.parse_args()
    os.environ["HYBRIDGW_WORKERS"] = str(args.workers)
    trees: list[tuple[str, Path | None]] = [(n, Path(p).resolve()) for n, p in (t.split("=", 1) for t in args.tree)]
    print(f"load average at start: {os.getloadavg()[0]:.2f} (a shared machine: compare only side by side)")
    errors: Counter[str] = Counter()
    sink, otlp_url = start_discard()
    with tempfile.TemporaryDirectory(prefix="hybridgw-bars-") as tmp:
        servers, pids, started = start_stack(Path(tmp), otlp_url, not args.no_litellm, trees or [("hybridgw", None)])
        try:
            results = asyncio.run(measure(servers, pids, args.seconds, args.rounds, args.gap_ms,
                                          args.latency_requests, errors, args.streams_only, args.latency_only))
        finally:
            if "litellm-proxy" in pids:
                os.kill(pids["litellm-proxy"], 15)
            for proc in started:
                procs.stop(proc)
            sink.shutdown()
    print(report(results, args.gap_ms))
    finish(errors)
    return 0  # failures are printed above, not told by the exit code


if __name__ == "__main__":
    raise SystemExit(main())
