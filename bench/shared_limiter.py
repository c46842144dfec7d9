"""What exact limits across `hybridgw serve --workers N` cost without Redis, measured to pick the
embedded shared store: reserve + settle pairs per second and the latency of one reserve, in 2
worker processes at once, for (a) each process's own in-memory limiter (fast, but each worker would
count alone: not exact), (b) the supervisor's counts over a unix socket (what `--workers` uses), and
(c) a SQLite table of window counts, one BEGIN IMMEDIATE transaction per reserve (WAL, as the
ledger's file), the other design the issue offered.

Run: .venv/bin/python -m bench.shared_limiter [--seconds 4]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

from observability.counts_server import CountsServer
from observability.limits import first_exceeded, plan_charges, settle_deltas
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_inprocess import InProcessLimiter
from observability.limits_protocol import Limiter, Reservation
from observability.limits_shared import CountsClient, SharedLimiter
from observability.window_counts import WindowCounts

CONFIG = LimitsConfig(teams={"t": TeamLimits(requests_per_minute=10**12, tokens_per_minute=10**15,
                                             usd_per_day=10**6)})
CONCURRENCY = 16  # requests in flight per worker


class SqliteLimiter:
    """The alternative: window counts in a SQLite table, checked and charged in one write transaction."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS w (key TEXT PRIMARY KEY, used INTEGER, end REAL)")

    def reserve(self, request_id: str, tokens: int, cost: float) -> Reservation:
        charges = plan_charges(CONFIG, "t", "k", tokens, cost, time.time())
        self.db.execute("BEGIN IMMEDIATE")
        used = [(self.db.execute("SELECT used FROM w WHERE key = ?", (c.key,)).fetchone() or (0,))[0]
                for c in charges]
        if first_exceeded(charges, used) is None:
            self.db.executemany("INSERT INTO w VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET used = used + ?",
                                [(c.key, c.amount, c.window_end, c.amount) for c in charges])
        self.db.execute("COMMIT")
        return Reservation(request_id, "t", "k", tokens, cost, tuple(c.key for c in charges))

    def settle(self, reservation: Reservation, tokens: int, cost: float) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("UPDATE w SET used = used + ? WHERE key = ?",
                            [(d, k) for k, d in settle_deltas(reservation, tokens, cost)])
        self.db.execute("COMMIT")


async def _async_worker(limiter: Limiter, seconds: float, concurrency: int) -> tuple[int, list[float]]:
    done, latencies = 0, []
    deadline = time.perf_counter() + seconds

    async def loop(n: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            held = await limiter.reserve(f"{n}-{i}", "t", "k", 300, 0.001)
            latencies.append(time.perf_counter() - start)
            await limiter.settle(held, 120, 0.0004)
            done, i = done + 1, i + 1

    await asyncio.gather(*(loop(n) for n in range(concurrency)))
    return done, latencies


def _worker(kind: str, where: str, seconds: float, concurrency: int,
            out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    if kind == "sqlite":
        limiter, done, latencies = SqliteLimiter(Path(where)), 0, []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:  # one at a time: a connection holds one transaction
            start = time.perf_counter()
            held = limiter.reserve(str(done), 300, 0.001)
            latencies.append(time.perf_counter() - start)
            limiter.settle(held, 120, 0.0004)
            done += 1
        out.put((done, latencies))
        return

    async def run() -> tuple[int, list[float]]:
        shared = kind == "unix socket"
        limiter: Limiter = SharedLimiter(CountsClient(Path(where)), CONFIG) if shared else InProcessLimiter(CONFIG)
        try:
            return await _async_worker(limiter, seconds, concurrency)
        finally:
            await limiter.aclose()

    out.put(uvloop.run(run()))  # the workers' loop (uvicorn runs on uvloop)


def _serve_counts(path: str, ready: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    async def serve() -> None:
        server = CountsServer(WindowCounts(), Path(path))
        await server.start()
        ready.set()
        await asyncio.Event().wait()

    uvloop.run(serve())


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, where: str, seconds: float, workers: int, concurrency: int) -> tuple[float, float, float]:
    """(pairs per second over all workers, p50 and p99 reserve latency in µs)."""
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [multiprocessing.Process(target=_worker, args=(kind, where, seconds, concurrency, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    latencies = sorted(x for _, lat in results for x in lat)
    pct = statistics.quantiles(latencies, n=100)
    return sum(n for n, _ in results) / seconds, pct[49] * 1e6, pct[98] * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f} (SQLite: one reserve at a "
          "time per worker, a connection holds one transaction)")
    print("| store | one reserve alone, p50 / p99 (µs) | reserve+settle pairs/s, 2 workers × "
          f"{CONCURRENCY} in flight | supervisor CPU per pair | exact across workers |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="hybridgw-limiter-") as tmp:
        sock = str(Path(tmp) / "counts.sock")
        ready = multiprocessing.Event()
        server = multiprocessing.Process(target=_serve_counts, args=(sock, ready), daemon=True)
        server.start()
        ready.wait(30)
        try:
            for label, kind, where, exact in (
                    ("in-process (each worker alone)", "memory", "", "no"),
                    ("unix socket (the supervisor's counts)", "unix socket", sock, "yes"),
                    ("SQLite, BEGIN IMMEDIATE per reserve", "sqlite", str(Path(tmp) / "w.sqlite3"), "yes")):
                _, p50, p99 = measure(kind, where, args.seconds / 2, 1, 1)
                before = cpu_s(server.pid or 0)
                rate, _, _ = measure(kind, where, args.seconds, 2, CONCURRENCY)
                spent = cpu_s(server.pid or 0) - before  # the counts server's CPU, when it was used
                cost = f"{spent / (rate * args.seconds) * 1e6:.0f} µs" if kind == "unix socket" else "—"
                print(f"| {label} | {p50:.0f} / {p99:.0f} | {rate:,.0f} | {cost} | {exact} |")
        finally:
            server.terminate()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
