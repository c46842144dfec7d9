"""What observability adds to one request, measured in one run: the gateway's per-request work with
ledger, tracing, metrics and limits off, each alone, and all on, against a real redis-server.

  .venv/bin/python bench/observability_overhead.py [--requests 4000] [--rounds 8] [--gaps 16] [--rate 500]

Per request, as the gateway does it: limiter.reserve (before the upstream call), a request span with
the GenAI attributes and a first-token event (BatchSpanProcessor, exporter writing to /dev/null),
metrics.record with every inter-token gap, ledger.submit (a background thread writes batches to
Redis), and limiter.settle (spawned after the response in the gateway, so timed separately).
Configurations are interleaved round by round so machine noise hits them alike. Requests are paced
at --rate per second (0: back to back, a stress case where the background threads' CPU competes
with every request for the GIL).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from observability.bench.metrics import Stats, stats
from observability.ledger import Ledger
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_inprocess import InProcessLimiter
from observability.limits_redis import RedisLimiter
from observability.metrics import RequestMetrics, build_metrics
from observability.redis_store import RedisStore
from observability.spill import SpillFile
from observability.sqlite_store import SqliteStore
from observability.stores import UsageStore
from observability.tracing import add_first_token_event, set_usage_attributes, start_request_span
from observability.usage import UsageRecord

CONFIGS = ("off", "ledger", "tracing", "limits", "limits-no-leases", "metrics-inline", "all", "all-no-leases",
           "all-embedded")
# "all" is the recommended production wiring: Redis reserve + span + ledger.submit on the request path,
# metrics recorded by the ledger's writer thread (Ledger(observers=[metrics.record])); "all-embedded"
# is the same with no Redis (in-process limiter, SQLite ledger); "metrics-inline" shows the cost of
# calling metrics.record on the request path instead. The limits here are far above what the bench
# spends, so the Redis limiter serves most reservations from leased quota (limit_leases.py);
# "-no-leases" is every reservation checked in Redis, as it is within the last 1/8 of a limit.


@dataclass
class Wiring:
    limiter: RedisLimiter | InProcessLimiter | None = None
    tracer_provider: TracerProvider | None = None
    ledger: Ledger | None = None
    inline_metrics: RequestMetrics | None = None


def _record(i: int, gaps: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"bench-{i}", time=time.time(), team=f"team-{i % 8}", key_id="key-1", model_alias="gpt-4o-mini",
        backend="openai", model="gpt-4o-mini", rule="default", status="ok", http_status=200, stream=True,
        prompt_tokens=200, completion_tokens=gaps + 1, estimated_prompt_tokens=200, estimated_completion_tokens=64,
        usage_source="upstream", cost_usd=0.0001, ttft_s=0.05, itl_p50_s=0.01, itl_p95_s=0.02, itl_max_s=0.03,
        e2e_s=0.3, itl_gaps_s=tuple(0.01 + 0.0001 * k for k in range(gaps)),
    )


async def one_request(w: Wiring, rec: UsageRecord) -> tuple[int, int]:
    """(ns on the request path, ns for the settle that runs after the response)."""
    start = time.perf_counter_ns()
    held = None
    if w.limiter is not None:
        held = await w.limiter.reserve(rec.request_id, rec.team, rec.key_id, 264, 0.0001)
    if w.tracer_provider is not None:
        tracer = w.tracer_provider.get_tracer("bench")
        span = start_request_span(tracer, operation="chat", request_model=rec.model_alias, team=rec.team,
                                  request_id=rec.request_id)
        add_first_token_event(span, 0.05)
        set_usage_attributes(span, rec)
        span.end()
    if w.inline_metrics is not None:
        w.inline_metrics.record(rec)
    if w.ledger is not None:
        w.ledger.submit(rec)
    path_ns = time.perf_counter_ns() - start
    settle_start = time.perf_counter_ns()
    if w.limiter is not None and held is not None:
        await w.limiter.settle(held, rec.total_tokens, rec.cost_usd)
    return path_ns, time.perf_counter_ns() - settle_start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


def _us(values: list[int]) -> Stats:
    """ns samples in µs, with `hybridgw bench`'s percentile definition (numpy's linear)."""
    summary = stats(v / 1000.0 for v in values)
    assert summary is not None, "a configuration ran no requests"
    return summary


Results = dict[str, tuple[list[int], list[int], list[float]]]  # path ns, settle ns, CPU s per round


def _settle_background(wiring: Wiring) -> None:
    """Finish the work a round queued on background threads, so its CPU is counted in that round."""
    if wiring.ledger is not None:
        wiring.ledger.flush()
    if wiring.tracer_provider is not None:
        wiring.tracer_provider.force_flush()


async def _round(wiring: Wiring, first: int, args: argparse.Namespace) -> tuple[list[int], list[int]]:
    interval = 1.0 / args.rate if args.rate else 0.0
    next_at = time.perf_counter()
    paths, settles = [], []
    for i in range(first, first + args.requests // args.rounds):
        if interval:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        path_ns, settle_ns = await one_request(wiring, _record(i, args.gaps))
        paths.append(path_ns)
        settles.append(settle_ns)
    return paths, settles


def _wirings(redis_url: str, workdir: Path, devnull: TextIO) -> dict[str, Wiring]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=devnull)))
    limits = LimitsConfig(default_team=TeamLimits(requests_per_minute=10**9, tokens_per_minute=10**12,
                                                  usd_per_day=10**6, usd_per_month=10**7))
    metrics = RequestMetrics(build_metrics().provider)

    def ledger(store: UsageStore, name: str, observed: bool) -> Ledger:
        return Ledger(store, spill=SpillFile(workdir / name), observers=[metrics.record] if observed else []).start()

    redis_limiter = RedisLimiter.from_url(redis_url, limits)
    exact_limiter = RedisLimiter.from_url(redis_url, limits, lease_quota=False)
    return {
        "off": Wiring(),
        "ledger": Wiring(ledger=ledger(RedisStore.from_url(redis_url), "plain", False)),
        "tracing": Wiring(tracer_provider=provider),
        "limits": Wiring(limiter=redis_limiter),
        "limits-no-leases": Wiring(limiter=exact_limiter),
        "metrics-inline": Wiring(inline_metrics=metrics),
        "all": Wiring(redis_limiter, provider, ledger(RedisStore.from_url(redis_url), "all", True)),
        "all-no-leases": Wiring(exact_limiter, provider, ledger(RedisStore.from_url(redis_url), "exact", True)),
        "all-embedded": Wiring(InProcessLimiter(limits), provider,
                               ledger(SqliteStore(workdir / "usage.sqlite3"), "embedded", True)),
    }


async def run(args: argparse.Namespace, redis_url: str, workdir: Path, devnull: TextIO) -> Results:
    wirings = _wirings(redis_url, workdir, devnull)
    results: Results = {c: ([], [], []) for c in CONFIGS}
    counter = 0
    for wiring in wirings.values():  # warm-up: connections, script loading, first-use allocations
        for _ in range(200):
            counter += 1
            await one_request(wiring, _record(counter, args.gaps))
        _settle_background(wiring)
    for _ in range(args.rounds):
        for config, wiring in wirings.items():
            cpu = time.process_time()
            paths, settles = await _round(wiring, counter, args)
            counter += len(paths)
            _settle_background(wiring)
            results[config][0].extend(paths)
            results[config][1].extend(settles)
            results[config][2].append((time.process_time() - cpu) / len(paths))
    closed: set[int] = set()
    for wiring in wirings.values():
        if wiring.ledger is not None:
            wiring.ledger.close()
        if wiring.limiter is not None and id(wiring.limiter) not in closed:
            closed.add(id(wiring.limiter))
            await wiring.limiter.aclose()
    provider = wirings["tracing"].tracer_provider
    assert provider is not None
    provider.shutdown()
    return results


def report(results: Results) -> str:
    base = statistics.median(results["off"][0]) / 1000.0
    base_cpu = statistics.median(results["off"][2]) * 1e6
    lines = [("| configuration | request path p50 (µs) | p90 | p99 | added p50 vs off (µs) | settle p50 (µs) "
              "| CPU per request, all threads, vs off (µs) |"),
             "|---|---:|---:|---:|---:|---:|---:|"]
    for config, (path, settle, cpu) in results.items():
        p = _us(path)
        settle_p50 = f"{_us(settle).p50:.1f}" if config.startswith(("limits", "all")) else "-"
        lines.append(f"| {config} | {p.p50:.1f} | {p.p90:.1f} | {p.p99:.1f} | "
                     f"{p.p50 - base:.1f} | {settle_p50} | {statistics.median(cpu) * 1e6 - base_cpu:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="per configuration")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--gaps", type=int, default=16, help="inter-token gaps per request")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second (0: back to back)")
    args = parser.parse_args()
    proc, url = _start_redis()
    try:
        with tempfile.TemporaryDirectory() as workdir, open(os.devnull, "w") as devnull:
            results = asyncio.run(run(args, url, Path(workdir), devnull))
    finally:
        proc.terminate()
        proc.wait()
    pace = f"{args.rate:g} requests/s" if args.rate else "back to back"
    print(f"{args.requests} requests per configuration ({pace}), {args.rounds} interleaved rounds, "
          f"{args.gaps} gaps each\n")
    print(report(results))


if __name__ == "__main__":
    main()
