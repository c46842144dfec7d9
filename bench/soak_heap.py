"""Where the gateway's RSS steps at a Redis outage come from: the soak's load and restarts, with the
gateway's heap dumped (gateway/heap_dump.py, SIGUSR2) idle after warm-up and idle after each outage; prints
RSS, RSS after malloc_trim, tracemalloc's total, pymalloc arenas, and the largest tracemalloc and
object-count differences between consecutive dumps.

Run: .venv/bin/python -m bench.soak_heap [--redis cluster] [--rate 30] [--outages 3] [--no-trace] [--out DIR]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.soak import one, plan, pool
from bench.soak_stack import Stack, start_stack
from observability.bench.exchange import BenchPool


async def load(stack: Stack, client: BenchPool, rate: float, seconds: float, first: int,
               rng: random.Random, outage_at: float | None, outage_s: float, mid_dump_s: float | None = None) -> int:
    """Open-loop soak mix for `seconds`, a Redis restart `outage_at` s in; returns the next request index."""
    tasks: set[asyncio.Task[Any]] = set()
    start, i = time.monotonic(), first
    restart = None
    while (now := time.monotonic() - start) < seconds:
        if outage_at is not None and restart is None and now >= outage_at:
            restart = asyncio.create_task(asyncio.to_thread(stack.restart_redis, outage_s))
            if mid_dump_s is not None:  # a dump during the recovery's burst (its own heap-<n> file)
                restart.add_done_callback(lambda _: asyncio.get_running_loop().call_later(
                    mid_dump_s, os.kill, stack.gateway_pid, signal.SIGUSR2))
        if i - first < now * rate and len(tasks) < 200:
            task = asyncio.create_task(one(client, stack, i, plan(i, rng)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            continue
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks, *([restart] if restart else []))
    return i


async def dump(stack: Stack, directory: Path, n: int, settle_s: float) -> dict[str, Any]:
    await asyncio.sleep(settle_s)  # idle: nothing in flight, keep-alive connections expired
    os.kill(stack.gateway_pid, signal.SIGUSR2)
    path = directory / f"heap-{n}.json"
    while not path.exists():
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    return json.loads(path.read_text())


async def drive(stack: Stack, a: argparse.Namespace, directory: Path) -> list[dict[str, Any]]:
    rng, dumps = random.Random(a.seed), []
    client = pool(stack)
    try:
        i = await load(stack, client, a.rate, a.warmup_s, 0, rng, None, 0)
        dumps.append(await dump(stack, directory, 0, a.settle_s))
        n = 0
        for _ in range(a.outages):
            i = await load(stack, client, a.rate, a.phase_s, i, rng, None if a.no_outage else a.phase_s / 3,
                           a.outage_s, a.mid_dump_s)
            n += 1 + (a.mid_dump_s is not None)
            dumps.append(await dump(stack, directory, n, a.settle_s))
            print(summary(dumps[-2], dumps[-1]), file=sys.stderr, flush=True)
    finally:
        client.close()
    return dumps


def summary(before: dict[str, Any], after: dict[str, Any]) -> str:
    keys = ("rss_kb", "rss_after_trim_kb", "traced_kb", "traced_peak_kb", "gc_objects")
    figures = {k: (before.get(k), after.get(k)) for k in keys}
    arenas = (before["pymalloc"].get("arenas allocated current"), after["pymalloc"].get("arenas allocated current"))
    types = {t: n - before["types"].get(t, 0) for t, n in after["types"].items() if n != before["types"].get(t, 0)}
    top = dict(sorted(types.items(), key=lambda kv: -abs(kv[1]))[:12])
    threads = sorted(set(after.get("thread_names", [])) ^ set(before.get("thread_names", [])))
    return f"dump {before['n']} -> {after['n']}: {figures} pymalloc arenas {arenas} malloc {after['mallinfo2']}\n" \
           f"  mappings {before.get('rss_by_mapping_kb')} -> {after.get('rss_by_mapping_kb')}\n" \
           f"  arenas (id, system MiB, free MiB) {_arenas(before)} -> {_arenas(after)}\n" \
           f"  threads {before.get('threads')} -> {after.get('threads')}, new/gone: {threads}\n" \
           f"  object counts: {top}"


def _arenas(dump: dict[str, Any]) -> list[tuple[int, float, float]]:
    return [(a["id"], round(a["system"] / 2**20, 1), round(a["free"] / 2**20, 1)) for a in dump.get("arenas", [])]


def traced_diff(directory: Path, a: int, b: int, top: int = 15) -> str:
    old = tracemalloc.Snapshot.load(str(directory / f"heap-{a}.snap"))
    new = tracemalloc.Snapshot.load(str(directory / f"heap-{b}.snap"))
    lines = [f"tracemalloc {a} -> {b}:"]
    for stat in new.compare_to(old, "traceback")[:top]:
        lines.append(f"  {stat.size_diff / 1024:+.1f} KiB {stat.count_diff:+d} blocks")
        lines.extend(f"      {frame}" for frame in stat.traceback.format()[-8:])
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", choices=("single", "cluster"), default="cluster")
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--warmup-s", type=float, default=60.0)
    p.add_argument("--phase-s", type=float, default=45.0, help="load around each outage (a third in, it starts)")
    p.add_argument("--outages", type=int, default=3)
    p.add_argument("--no-outage", action="store_true", help="the same phases without restarts (the control)")
    p.add_argument("--outage-s", type=float, default=5.0)
    p.add_argument("--settle-s", type=float, default=8.0)
    p.add_argument("--no-trace", action="store_true", help="tracemalloc off: RSS without its overhead")
    p.add_argument("--gateway-env", action="append", default=[], help="NAME=VALUE for the gateway (e.g. MALLOC_ARENA_MAX=2)")
    p.add_argument("--mid-dump-s", type=float, default=None,
                   help="also dump this long after Redis is back, in the recovery's burst (heap-<n> between)")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--out", type=Path, default=None, help="keep the dumps here (default: a temporary folder)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hybridgw-soak-heap-") as tmp:
        directory = a.out or Path(tmp) / "heap"
        env = {"HYBRIDGW_HEAP_DUMP": str(directory), "HYBRIDGW_HEAP_DUMP_TRACE": "0" if a.no_trace else "1",
               **dict(item.split("=", 1) for item in a.gateway_env)}
        with start_stack(Path(tmp), 8, a.redis, gateway_env=env) as stack:
            dumps = asyncio.run(drive(stack, a, directory))
        if not a.no_trace:
            numbers = [d["n"] for d in dumps]
            for k in range(len(numbers) - 1):
                print(traced_diff(directory, numbers[k], numbers[k + 1]))
                if numbers[k + 1] - numbers[k] == 2:
                    print(traced_diff(directory, numbers[k], numbers[k] + 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
