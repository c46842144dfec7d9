"""What idling costs the next request on this host: the same Python work timed back to back and after a sleep
(the interpreter alone), and the gateway's event-loop CPU per request at 1 in flight behind a 20 ms upstream
(idle 20 ms between its bursts), at 1 in flight behind a 0 ms one (the same work per request, barely idle) and
at 64 in flight (never idle), one process, interleaved rounds. Issue #15's added-latency bar.

Run: .venv/bin/python -m bench.idle_penalty [--rounds 4] [--requests 400] [--tree PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.gateway_overhead import Server, client, closed_loop
from bench.issue15_bars import THROUGHPUT_CONCURRENCY, request, start_stack
from bench.otlp_discard import start_discard
from bench.run_report import finish
from bench.thread_cpu_split import ticks
from observability.bench.client import Sent
from observability.bench.metrics import stats, ttft
from observability.bench.records import RequestRecord
from tests.support import procs

SLEEPS_S = (0.0, 0.0001, 0.001, 0.02)
_BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there " * 20}] * 3, "max_tokens": 10}


def python_work() -> None:
    """~0.2–0.4 ms of the kinds of work a request does: JSON both ways, a regex, dicts, strings."""
    for _ in range(10):
        text = json.dumps(_BODY)
        back = json.loads(text)
        re.sub(r"\d", "x", text)
        sorted(back.items(), key=str)
        names = [str(i) for i in range(50)]
        dict(zip(names, names))


def interpreter_rounds(rounds: int, calls: int) -> dict[float, list[float]]:
    """Per sleep before each call: the median thread-CPU ms of a call, one value per round (interleaved)."""
    out: dict[float, list[float]] = {s: [] for s in SLEEPS_S}
    for _ in range(rounds):
        for sleep_s in SLEEPS_S:
            took = []
            for _ in range(calls):
                if sleep_s:
                    time.sleep(sleep_s)
                start = time.thread_time()
                python_work()
                took.append(time.thread_time() - start)
            out[sleep_s].append(statistics.median(took) * 1e3)
    return out


def at_once(server: Server) -> Sent:
    """A non-streamed request the fake upstream answers without its 20 ms wait."""
    body = {"model": server.model, "messages": [{"role": "user", "content": "say something short"}],
            "max_tokens": 16, "user": "fake:ttft_ms=0"}
    return Sent(json.dumps(body).encode(), server.key, RequestRecord(0, "idle", "bench", 0, 0, 0.0, 0.0))


def loop_cpu_s(pid: int) -> float:
    """The event loop's (the main thread's) user + system CPU seconds."""
    return ticks(Path(f"/proc/{pid}/task/{pid}/stat")) / os.sysconf("SC_CLK_TCK")


async def gateway_rounds(direct: Server, gw: Server, pid: int, rounds: int, requests: int,
                         errors: Counter[str]) -> dict[str, list[float]]:
    """Per round: loop CPU ms per request at 1 in flight (20 ms and 0 ms upstream) and at 64, and the latencies
    at 1 in flight."""
    out: dict[str, list[float]] = {"cpu_1": [], "cpu_1_at_once": [], "cpu_64": [], "lat_direct": [], "lat_gw": []}
    pools = {s.name: client(s) for s in (direct, gw)}
    try:
        await closed_loop(gw, pools[gw.name], request(gw, False, 0), 16, 500, None, errors)  # warm-up
        for _ in range(rounds):
            records = await closed_loop(direct, pools[direct.name], request(direct, False, 0), 1, requests, None,
                                        errors)
            out["lat_direct"] += [v for r in records if r.ok and (v := ttft(r)) is not None]
            runs = (("cpu_1", request(gw, False, 0), 1, requests), ("cpu_1_at_once", at_once(gw), 1, requests * 4),
                    ("cpu_64", request(gw, False, 0), THROUGHPUT_CONCURRENCY, requests * 20))
            for key, sent, conc, many in runs:
                before = loop_cpu_s(pid)
                records = await closed_loop(gw, pools[gw.name], sent, conc, many, None, errors)
                done = sum(1 for r in records if r.ok) or 1
                out[key].append((loop_cpu_s(pid) - before) / done * 1e3)
                if key == "cpu_1":
                    out["lat_gw"] += [v for r in records if r.ok and (v := ttft(r)) is not None]
    finally:
        for pool in pools.values():
            pool.close()
    return out


def report(interp: dict[float, list[float]], gw: dict[str, list[float]]) -> str:
    med = statistics.median
    hot = med(interp[0.0])
    lines = ["| the interpreter alone: sleep before each call | CPU ms a call, median (rounds) | × back to back |",
             "|---|---|---|"]
    for sleep_s, values in interp.items():
        label = "none (back to back)" if not sleep_s else f"{sleep_s * 1e3:g} ms"
        lines.append(f"| {label} | {med(values):.3f} ({' / '.join(f'{v:.3f}' for v in values)}) | "
                     f"{med(values) / hot:.2f} |")
    c1, c1_at_once, c64 = med(gw["cpu_1"]), med(gw["cpu_1_at_once"]), med(gw["cpu_64"])
    cells = {k: " / ".join(f"{v:.3f}" for v in gw[k]) for k in ("cpu_1", "cpu_1_at_once", "cpu_64")}
    d, g = stats(gw["lat_direct"]), stats(gw["lat_gw"])
    lines += ["", f"| the gateway's event loop | CPU ms a request, median (rounds) | × at {THROUGHPUT_CONCURRENCY} in flight |",
              "|---|---|---|",
              f"| 1 in flight, 20 ms upstream (idle 20 ms between bursts) | {c1:.3f} ({cells['cpu_1']}) | "
              f"**{c1 / c64:.2f}** |",
              f"| 1 in flight, 0 ms upstream (the same work, barely idle) | {c1_at_once:.3f} "
              f"({cells['cpu_1_at_once']}) | {c1_at_once / c64:.2f} |",
              f"| {THROUGHPUT_CONCURRENCY} in flight, 20 ms upstream (never idle) | {c64:.3f} ({cells['cpu_64']}) | 1.00 |"]
    if d is not None and g is not None:
        lines.append(f"\nadded latency at 1 in flight p50 / p99: +{(g.p50 - d.p50) * 1e3:.2f} / "
                     f"+{(g.p99 - d.p99) * 1e3:.2f} ms (direct p50 {d.p50 * 1e3:.2f} ms)")
    return "\n".join(lines)


def main() -> int:
    os.environ["HYBRIDGW_WORKERS"] = "1"  # the loop measured is the one process's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400, help="per round at 1 in flight (×20 at 64)")
    parser.add_argument("--calls", type=int, default=300, help="interpreter calls per sleep per round")
    parser.add_argument("--tree", type=Path, help="a hybridgw source tree (default: this checkout)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (a shared machine: compare only within the run)")
    interp = interpreter_rounds(args.rounds, args.calls)
    errors: Counter[str] = Counter()
    sink, otlp_url = start_discard()
    with tempfile.TemporaryDirectory(prefix="hybridgw-idle-") as tmp:
        tree = args.tree.resolve() if args.tree else None
        servers, pids, started = start_stack(Path(tmp), otlp_url, False, [("hybridgw", tree)])
        try:
            gw = asyncio.run(gateway_rounds(servers[0], servers[1], pids["hybridgw"], args.rounds, args.requests,
                                            errors))
        finally:
            for proc in started:
                procs.stop(proc)
            sink.shutdown()
    print(report(interp, gw))
    return finish(errors)


if __name__ == "__main__":
    sys.exit(main())
