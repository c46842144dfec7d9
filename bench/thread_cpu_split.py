"""The gateway's CPU per non-streamed request, split by thread, at issue #15's bar load: one gateway (full path:
auth, routing, limits, ledger, access log, OTLP tracing to a receiver that discards) behind the 20 ms fake
upstream at 64 in flight, each thread's utime+stime read from /proc/PID/task/*/stat before and after a fixed
number of requests (threads by their Python names, bench/named_gateway.py; the event loop is the pid). `--perf FILE`: `perf record` the
loop thread during the last run (`perf report -i FILE`).

Run: .venv/bin/python -m bench.thread_cpu_split [--tree NAME=PATH[@YOUNG,MIDDLE,OLD] ...] [--requests 20000]
     [--runs 3] [--latency N] [--perf FILE]
--latency N: after each run, N requests at 1 in flight (p50 / p99 at the client, the loop's GC then).
--stream: 16-chunk streams (unpaced) instead of non-streamed requests, CPU per stream.
--garbage N: after the runs, N requests at the bar's load with gc.DEBUG_SAVEALL: reference cycles per request.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.gateway_overhead import Server, client, closed_loop
from bench.issue15_bars import THROUGHPUT_CONCURRENCY, request
from bench.otlp_discard import start_discard
from bench.run_report import finish, load_average
from bench.stack import create_key, start_fake
from bench.workers_throughput import POLICY
from observability.bench.metrics import stats, ttft
from tests.support import procs

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Gateway:
    server: Server
    proc: procs.Proc
    names: Path  # where bench/named_gateway.py writes its thread names on SIGUSR1
    stream: bool = False  # its requests: 16-chunk streams (unpaced) instead of non-streamed answers

    @property
    def pid(self) -> int:
        return self.proc.pid


def ticks(stat_path: Path) -> int:
    fields = stat_path.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def thread_ticks(pid: int) -> dict[int, int]:
    """Clock ticks (user + system) per live thread id, and under -1 the whole process's (exited threads too)."""
    out = {-1: ticks(Path(f"/proc/{pid}/stat"))}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = ticks(task / "stat")
        except OSError:  # the thread ended between listing and reading
            continue
    return out


def thread_names(gw: Gateway) -> tuple[dict[int, str], dict]:
    """The gateway's {thread id: Python thread name} now, less numbers (Thread-12 → Thread-N), and its loop's GC
    so far (bench/named_gateway.py)."""
    gw.names.unlink(missing_ok=True)
    os.kill(gw.pid, signal.SIGUSR1)
    procs.wait_until(gw.names.exists, "the thread names")
    got = json.loads(gw.names.read_text())
    names = {int(k): re.sub(r"\d+", "N", v) for k, v in got["names"].items()}
    return {**names, gw.pid: "loop"}, got


async def one_run(gw: Gateway, requests: int, errors: Counter[str], perf: Path | None) -> dict[str, float]:
    """CPU µs per successful request, per thread name, over `requests` requests at the bar's concurrency."""
    pool = client(gw.server)
    recorder = None
    try:
        if perf is not None:
            recorder = subprocess.Popen(["perf", "record", "-g", "-F", "999", "-t", str(gw.pid), "-o", str(perf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, gc_before = thread_names(gw)
        before = thread_ticks(gw.pid)
        records = await closed_loop(gw.server, pool, request(gw.server, gw.stream, 0), THROUGHPUT_CONCURRENCY,
                                    requests, None, errors)
        after = thread_ticks(gw.pid)
    finally:
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)  # perf writes its file on SIGINT
            recorder.wait()
        pool.close()
    names, gc_after = thread_names(gw)
    done = sum(1 for r in records if r.ok) or 1
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = defaultdict(float)
    live = 0
    for tid, t in after.items():
        if tid != -1:
            out[names.get(tid, "(unnamed)")] += (t - before.get(tid, 0)) * tick_us / done
            live += t - before.get(tid, 0)
    out["(threads that ended)"] = (after[-1] - before[-1] - live) * tick_us / done
    for gen in range(3):  # inside the loop's figure, not added to it
        out[f"loop's GC gen{gen} (in loop)"] = (gc_after["gc_s"][gen] - gc_before["gc_s"][gen]) * 1e6 / done
        out[f"loop's GC gen{gen} collections a 1,000 requests"] = (
            gc_after["counts"][gen] - gc_before["counts"][gen]) * 1e3 / done
    out["loop's GC longest pause (µs)"] = gc_after["max_pause_s"] * 1e6
    return out


async def one_latency_run(gw: Gateway, requests: int, errors: Counter[str]) -> dict[str, float]:
    """At 1 in flight: the client's p50 / p99 (µs) and the loop's GC µs a request and longest pause."""
    pool = client(gw.server)
    try:
        _, gc_before = thread_names(gw)
        records = await closed_loop(gw.server, pool, request(gw.server, gw.stream, 0), 1, requests, None, errors)
        _, gc_after = thread_names(gw)
    finally:
        pool.close()
    lat = stats(v for r in records if r.ok and (v := ttft(r)) is not None)
    done = sum(1 for r in records if r.ok) or 1
    return {"1 in flight: p50 (µs, 20 ms upstream)": lat.p50 * 1e6 if lat else 0.0,
            "1 in flight: p99 (µs, 20 ms upstream)": lat.p99 * 1e6 if lat else 0.0,
            "1 in flight: loop's GC µs a request": (sum(gc_after["gc_s"]) - sum(gc_before["gc_s"])) * 1e6 / done,
            "1 in flight: loop's GC longest pause (µs)": gc_after["max_pause_s"] * 1e6}


async def garbage_run(gw: Gateway, requests: int, errors: Counter[str]) -> str:
    """Reference cycles per request at the bar's load: what the cyclic GC found unreachable (gc.DEBUG_SAVEALL,
    turned on for this run only: the gateway is not measured after it)."""
    pool = client(gw.server)
    try:
        os.kill(gw.pid, signal.SIGUSR2)
        thread_names(gw)  # the count starts here
        records = await closed_loop(gw.server, pool, request(gw.server, gw.stream, 0), THROUGHPUT_CONCURRENCY,
                                    requests, None, errors)
        _, got = thread_names(gw)
    finally:
        pool.close()
    done = sum(1 for r in records if r.ok) or 1
    kinds = ", ".join(f"{k} {n / done:.2f}" for k, n in got["garbage_kinds"])
    return f"{gw.server.name}: {got['garbage'] / done:.1f} objects a request found by the cyclic GC ({kinds or 'none'})"


def _all(run: dict[str, float]) -> float:
    return sum(v for k, v in run.items() if not k.startswith(("loop's GC", "1 in flight")))


def table(runs: dict[str, list[dict[str, float]]]) -> str:
    names = sorted({n for rs in runs.values() for r in rs for n in r},
                   key=lambda n: -max(statistics.median(r.get(n, 0.0) for r in rs) for rs in runs.values()))
    trees = list(runs)
    lines = ["| thread | " + " | ".join(f"{t}: CPU µs a request, median (runs)" for t in trees) + " |",
             "|---|" + "---:|" * len(trees)]
    for name in [*names, "all"]:
        cells = []
        for t in trees:
            values = [_all(r) if name == "all" else r.get(name, 0.0) for r in runs[t]]
            cells.append(f"{statistics.median(values):.0f} ({' / '.join(f'{v:.0f}' for v in values)})")
        if name != "all" and all(c.startswith("0 ") for c in cells):
            continue
        lines.append(f"| {'**all**' if name == 'all' else name} | " + " | ".join(cells) + " |")
    per_cpu = " / ".join(f"{t} {1e6 / statistics.median(_all(r) for r in rs):.0f}" for t, rs in runs.items())
    lines.append(f"requests per gateway CPU-second (1 / median of all): {per_cpu}")
    return "\n".join(lines)


async def measure(gateways: list[Gateway], requests: int, runs: int, errors: Counter[str],
                  perf: Path | None, latency: int, garbage: int) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {g.server.name: [] for g in gateways}
    for g in gateways:  # warm-up: connections, caches, lazy imports, the ledger's and exporter's first batches
        await one_run(g, 2000, errors, None)
    for i in range(runs):  # interleaved, so the machine's noise hits every tree alike
        for g in gateways:
            last = perf is not None and i == runs - 1 and g is gateways[0]
            out[g.server.name].append(await one_run(g, requests, errors, perf if last else None))
            if latency:
                out[g.server.name][-1].update(await one_latency_run(g, latency, errors))
    if garbage:  # last: DEBUG_SAVEALL keeps what it finds
        for g in gateways:
            print(await garbage_run(g, garbage, errors), flush=True)
    return out


def start_gateways(workdir: Path, fake_port: int, otlp_url: str, trees: list[tuple[str, Path, str]],
                   stream: bool) -> list[Gateway]:
    """One gateway per tree, as bench/issue15_bars.py starts them, under bench/named_gateway.py."""
    config = workdir / "policy.yaml"
    config.write_text(POLICY.format(port=fake_port))
    out = []
    for name, tree, thresholds in trees:
        env = {"BENCH_GC_THRESHOLDS": thresholds, "HYBRIDGW_DATA_DIR": str(workdir / f"data-{name}"), "REDIS_URL": "",
               "HYBRIDGW_WORKERS": "1",
               "HYBRIDGW_TRACES": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_url,
               "HYBRIDGW_MAX_CONNECTIONS_PER_CLIENT": "0", "PYTHONPATH": str(tree)}
        key = create_key(config, env, cwd=tree)
        port, names = procs.free_port(), workdir / f"{name}.threads.json"
        wrapper = str(ROOT / "bench" / "named_gateway.py")  # by path: this checkout's, whatever the tree holds
        gw = procs.start([sys.executable, wrapper, str(names), "serve", "--config", str(config), "--port", str(port)],
                         env=env, cwd=tree, name=name)
        out.append(Gateway(Server(name, port, key, "m"), gw, names, stream))
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", gw, timeout_s=120)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH[@YOUNG,MIDDLE,OLD]: a gateway from "
                        "this source tree [serving with these GC thresholds: an experiment, bench/named_gateway.py]")
    parser.add_argument("--requests", type=int, default=20000, help="requests per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency", type=int, default=0, help="after each run, this many requests at 1 in flight: "
                        "p50 / p99 and the loop's GC")
    parser.add_argument("--garbage", type=int, default=0, help="after the runs, this many requests with "
                        "gc.DEBUG_SAVEALL on: the reference cycles left per request, by type")
    parser.add_argument("--stream", action="store_true", help="16-chunk streams instead of non-streamed requests")
    parser.add_argument("--perf", type=Path, help="perf record the first tree's loop thread in the last run")
    args = parser.parse_args()
    specs = [(n, *p.partition("@")[::2]) for n, p in (t.split("=", 1) for t in args.tree)]
    trees = [(n, Path(p).resolve(), gc_thresholds) for n, p, gc_thresholds in specs]
    print(f"load average at start: {load_average(all_three=True)}")
    errors: Counter[str] = Counter()
    sink, otlp_url = start_discard()
    fake, fake_port = start_fake()
    gateways: list[Gateway] = []
    with tempfile.TemporaryDirectory(prefix="hybridgw-split-") as tmp:
        try:
            gateways = start_gateways(Path(tmp), fake_port, otlp_url, trees or [("hybridgw", ROOT, "")], args.stream)
            runs = asyncio.run(measure(gateways, args.requests, args.runs, errors, args.perf, args.latency,
                                       args.garbage))
        finally:
            for proc in [fake, *(g.proc for g in gateways)]:
                procs.stop(proc)
            sink.shutdown()
    print(table(runs))
    return finish(errors, all_three=True)


if __name__ == "__main__":
    raise SystemExit(main())
