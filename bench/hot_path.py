"""The gateway's hot path, in one run: CPU per request (non-streamed) and per relayed SSE chunk read
from each gateway process's /proc stat, and added latency at concurrency 1, for one or more source
trees side by side (e.g. `--tree before=/tmp/base --tree after=.`), interleaved round by round,
against one fake upstream answering at once. Full path on: auth, routing, rpm + tpm limits and a USD
budget, the SQLite ledger, one access-log line per request, tracing (SDK spans, batched OTLP export).
`--profile DIR` runs the first tree's gateway under cProfile and prints its per-stage breakdown; `--gc`
runs every gateway with its event loop's garbage-collection time counted (bench/gc_gateway.py).

Run: .venv/bin/python -m bench.hot_path [--tree NAME=PATH ...] [--requests 2000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.gateway_overhead import Server, client, closed_loop, latencies
from bench.hot_path_spy import start_pyspy, stop_pyspy
from bench.hot_path_stages import stage_table
from bench.otlp_discard import start_discard
from bench.run_report import finish
from bench.stack import create_key, start_fake
from bench.workers_throughput import POLICY, cpu_s
from observability.bench.client import Sent
from observability.bench.metrics import stats
from observability.bench.records import RequestRecord
from tests.support import procs

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = 16  # content chunks per streamed reply (+ the role chunk: 17 relayed frames + [DONE])


@dataclass(frozen=True)
class Gateway:
    server: Server
    pid: int
    profile: Path | None = None  # where its cProfile stats (bench/profiled_gateway.py) or GC times go


def body(server: Server, stream: bool) -> Sent:
    data = {"model": server.model, "messages": [{"role": "user", "content": "say something short"}],
            "max_tokens": 16, "stream": stream}
    return Sent(json.dumps(data).encode(), server.key, RequestRecord(0, "hot", "bench", 0, 0, 0.0, 0.0))


def start_gateway(name: str, tree: Path, config: Path, workdir: Path, profile: Path | None,
                  traces: str, otlp_url: str, wrapper: str = "bench.profiled_gateway",
                  server: str = "uvicorn") -> procs.Proc:
    """`server`: uvicorn (`hybridgw serve`); granian / granian-rust (bench/hot_path_granian.py, with granian
    importable, or from $GRANIAN_PATH when installed apart; -rust: its Rust task implementation); floor /
    floor-granian: not the gateway but the bare proxy under it (bench/hot_path_floor.py)."""
    path = str(tree) if profile is None and server == "uvicorn" else f"{tree}:{ROOT}"  # wrappers are this tree's
    if "granian" in server and os.environ.get("GRANIAN_PATH"):  # granian is not a dependency
        path = f"{os.environ['GRANIAN_PATH']}:{path}"
    traces, _, ratio = traces.partition(":")  # otlp:0.1 → head sampling ratio 0.1 (default 1: every trace)
    env = {"HYBRIDGW_DATA_DIR": str(workdir / f"data-{name}"), "REDIS_URL": "", "PYTHONPATH": path,
           "HYBRIDGW_TRACES": traces, "HYBRIDGW_WORKERS": "1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_url,
           "HYBRIDGW_TRACE_SAMPLE_RATIO": ratio or "1.0"}
    port = procs.free_port()
    command = ["-m", "gateway.cli"] if profile is None else ["-m", wrapper, str(profile)]
    after: list[str] = []
    if server.startswith("granian"):
        command = ["-m", "bench.hot_path_granian"] + (["--task-impl", "rust"] if server == "granian-rust" else [])
    elif server.startswith("floor"):
        command, after = ["-m", "bench.hot_path_floor"], ["--server", "granian" if "granian" in server else "uvicorn"]
    gw = procs.start([sys.executable, *command, "serve", "--config", str(config), "--port",
                      str(port), *after], env=env, cwd=tree, name=f"gw-{name}")
    procs.wait_http(f"http://127.0.0.1:{port}/healthz", gw, timeout_s=120)
    gw.port = port  # type: ignore[attr-defined]
    return gw


def key_of(tree: Path, config: Path, workdir: Path, name: str) -> str:
    env = {"HYBRIDGW_DATA_DIR": str(workdir / f"data-{name}"), "REDIS_URL": "", "PYTHONPATH": str(tree)}
    return create_key(config, env, cwd=tree)


def threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process, keyed "name/tid" (the event loop's thread is the pid's)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[f"{'loop' if task.name == str(pid) else name}/{task.name}"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


async def cpu_per_request(gw: Gateway, stream: bool, count: int, errors: Counter[str]) -> float:
    """Gateway CPU seconds per request over `count` requests at concurrency 8 (requests that failed count too)."""
    pool = client(gw.server)
    try:
        before, threads = cpu_s(gw.pid), threads_cpu(gw.pid)
        await closed_loop(gw.server, pool, body(gw.server, stream), 8, count, None, errors)
        after = threads_cpu(gw.pid)
        split = {k: v - threads.get(k, 0.0) for k, v in after.items()}
        kind = "streamed" if stream else "non-streamed"
        print(f"{gw.server.name} {kind}: CPU per request by thread (ms): " + ", ".join(
            f"{k} {v / count * 1e3:.2f}" for k, v in sorted(split.items(), key=lambda kv: -kv[1]) if v > 0))
        return (cpu_s(gw.pid) - before) / count
    finally:
        pool.close()


async def measure(direct: Server, gateways: list[Gateway], requests: int, rounds: int, errors: Counter[str],
                  plain: bool = True, streams: bool = True,
                  pyspy: Path | None = None) -> dict[str, dict[str, list[float]]]:
    """Without `plain` or `streams`: one kind of request only (a profile's stages are then its own)."""
    out: dict[str, dict[str, list[float]]] = {
        g.server.name: {"cpu": [], "cpu_stream": [], "lat": []} for g in gateways}
    out["direct"] = {"lat": []}
    spy = None
    pools = {g.server.name: client(g.server) for g in gateways}
    direct_pool = client(direct)
    try:
        for g in gateways:  # warm-up: connections, caches, lazy imports
            if plain:
                await cpu_per_request(g, False, 200, errors)
            if streams:
                await cpu_per_request(g, True, 100, errors)
        for g in gateways:
            if g.profile is not None:
                os.kill(g.pid, signal.SIGUSR1)  # profile from here on
        spy = start_pyspy(gateways[0].pid, pyspy) if pyspy is not None else None
        for _ in range(rounds):  # interleaved, so the machine's noise hits every tree alike
            out["direct"]["lat"] += await latencies(direct, direct_pool, False, requests // 10, errors)
            for g in gateways:
                r = out[g.server.name]
                if plain:
                    r["cpu"].append(await cpu_per_request(g, False, requests, errors))
                if streams:
                    r["cpu_stream"].append(await cpu_per_request(g, True, requests // 2, errors))
                if plain:
                    r["lat"] += await latencies(g.server, pools[g.server.name], False, requests // 10, errors)
    finally:
        for pool in (*pools.values(), direct_pool):
            pool.close()
    if spy is not None:
        stop_pyspy(spy)
    for g in gateways:
        if g.profile is not None:
            os.kill(g.pid, signal.SIGUSR2)  # stop and write the stats
            procs.wait_until(lambda p=g.profile: p.exists() and p.stat().st_size > 0, "the profile / GC times")
    return out


def report(results: dict[str, dict[str, list[float]]], first: str) -> str:
    d = stats(results["direct"]["lat"] or [float("nan")])
    assert d is not None
    lines = ["| tree | CPU per request, non-streamed (ms) | vs first | req/s per core (1 / CPU) | "
             f"CPU per streamed request, {CHUNKS} chunks (ms) | CPU per relayed chunk (µs) | vs first | "
             "added p50 / p99 at 1 in flight (ms) |", "|---|---|---|---|---|---|---|---|"]
    base = results[first]
    for name, r in results.items():
        if name == "direct":
            continue
        cpu, cpu_s_ = (statistics.median(r[k] or [float("nan")]) for k in ("cpu", "cpu_stream"))
        per_chunk = cpu_s_ / (CHUNKS + 1)
        lat = stats(r["lat"] or [float("nan")])
        assert lat is not None
        lines.append(
            f"| {name} | {cpu * 1e3:.2f} ({' / '.join(f'{v * 1e3:.2f}' for v in r['cpu'])}) "
            f"| {cpu / statistics.median(base['cpu'] or [1.0]):.2f}× | {1 / cpu:.0f} | {cpu_s_ * 1e3:.2f} "
            f"| {per_chunk * 1e6:.0f} | {cpu_s_ / statistics.median(base['cpu_stream'] or [1.0]):.2f}× "
            f"| +{(lat.p50 - d.p50) * 1e3:.2f} / +{(lat.p99 - d.p99) * 1e3:.2f} |")
    lines.append(f"direct p50 / p99 at 1 in flight: {d.p50 * 1e3:.2f} / {d.p99 * 1e3:.2f} ms")
    return "\n".join(lines)


def gc_table(times: dict[str, dict], requests: int) -> str:
    """Each gateway's GC time on its event loop over the measured requests (bench/gc_gateway.py)."""
    lines = [f"GC on the event loop over {requests} measured requests per gateway:",
             "| tree | GC µs per request | collections gen0 / gen1 / gen2 | gen2 ms each | longest pause (ms) |",
             "|---|---|---|---|---|"]
    for name, t in times.items():
        each = t["gc_s"][2] / t["counts"][2] * 1e3 if t["counts"][2] else 0.0
        lines.append(f"| {name} | {sum(t['gc_s']) / requests * 1e6:.0f} | {' / '.join(map(str, t['counts']))} "
                     f"| {each:.1f} | {t['max_pause_s'] * 1e3:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[],
                        help="NAME=PATH[@TRACES][+SERVER] of a source tree (default: this one); @none: that gateway "
                             "without spans; @otlp:0.1: head-sampled at ratio 0.1; +granian / +granian-rust: served by granian (bench/hot_path_granian.py); "
                             "+floor / +floor-granian: the bare proxy instead (bench/hot_path_floor.py)")
    parser.add_argument("--requests", type=int, default=2000, help="non-streamed requests per CPU sample")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="run the first tree's gateway under cProfile; stats here")
    parser.add_argument("--streamed", action="store_true", help="with --profile / --pyspy: streamed requests")
    parser.add_argument("--pyspy", type=Path, help="sample the first tree's gateway with py-spy into this file "
                        "(bench/hot_path_spy.py reads it)")
    parser.add_argument("--gc", action="store_true", help="count each gateway's GC time on its event loop")
    # otlp by default: the in-memory exporter keeps every span, so the heap (and each full GC) grows with the run
    parser.add_argument("--traces", default="otlp", help="HYBRIDGW_TRACES of the gateways (none: no spans; otlp: "
                        "the production exporter, batched, to a receiver that discards; memory: keeps every span)")
    args = parser.parse_args()
    specs = [(n, *p.partition("+")[::2]) for n, p in (t.split("=", 1) for t in args.tree)]
    specs = [(n, *p.partition("@")[::2], server or "uvicorn") for n, p, server in specs]
    trees = [(n, Path(p).resolve(), t or args.traces, server) for n, p, t, server in specs] or [
        ("this", ROOT, args.traces, "uvicorn")]
    print(f"load average at start: {os.getloadavg()[0]:.2f} (a shared machine: compare only side by side)")
    errors: Counter[str] = Counter()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hybridgw-hot-") as tmp:
        workdir = Path(tmp)
        fake, fake_port = start_fake("--chunks", str(CHUNKS))
        started = [fake]
        sink, otlp_url = start_discard()
        try:
            config = workdir / "policy.yaml"
            config.write_text(POLICY.format(port=fake_port))
            gateways = []
            for i, (name, tree, traces, server) in enumerate(trees):
                key = key_of(tree, config, workdir, name)
                prof = args.profile / f"{name}.prof" if args.profile and i == 0 else None
                prof = workdir / f"{name}.gc.json" if args.gc else prof
                gw = start_gateway(name, tree, config, workdir, prof, traces, otlp_url,
                                   "bench.gc_gateway" if args.gc else "bench.profiled_gateway", server)
                started.append(gw)
                gateways.append(Gateway(Server(name, gw.port, key, "m"), gw.popen.pid, prof))  # type: ignore[attr-defined]
            profiling = args.profile is not None or args.pyspy is not None  # one kind of request only
            results = asyncio.run(measure(Server("direct", fake_port, "none", "m"), gateways, args.requests,
                                          args.rounds, errors, plain=not profiling or not args.streamed,
                                          streams=not profiling or args.streamed, pyspy=args.pyspy))
            if args.gc:
                measured = args.rounds * (args.requests + args.requests // 2 + args.requests // 10)
                print(gc_table({g.server.name: json.loads(g.profile.read_text()) for g in gateways if g.profile},
                               measured))
        finally:
            for proc in started:
                procs.stop(proc)
            sink.shutdown()
    print(report(results, trees[0][0]))
    if args.profile:
        print(stage_table(args.profile / f"{trees[0][0]}.prof"))
    return finish(errors)


if __name__ == "__main__":
    raise SystemExit(main())
