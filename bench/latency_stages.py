"""One request's wall time at 1 in flight, stage by stage: the fake upstream direct vs each hybridgw tree (the
bars' full path: auth, routing, limits, budget, ledger, access log, OTLP spans), interleaved, non-streamed, 20 ms
upstream. The server processes load bench/latency_probe (HYBRIDGW_LATENCY_PROBE), which stamps each stage on the
loop thread with the wall clock, the thread's CPU clock and its run-queue wait; the client's own send and end
times close the chain: client sent → request in → upstream send → upstream in → body out → client end, and the
usage record (finish(): the record, spans' ends, access line, ledger hand-off) made after the last byte.

Run: .venv/bin/python -m bench.latency_stages [--tree NAME=PATH ...] [--requests 200] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.gateway_overhead import Server, client, closed_loop
from bench.issue15_bars import request
from bench.otlp_discard import start_discard
from bench.run_report import finish
from bench.stack import create_key
from bench.workers_throughput import POLICY
from tests.support import procs

PROBE = Path(__file__).resolve().parent / "latency_probe"
Stamp = tuple[str, float, float, float]  # kind, wall, thread CPU, run-queue wait (s)


def _env(tree: Path, stamps: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{tree}{os.pathsep}{PROBE}", "HYBRIDGW_LATENCY_PROBE": str(stamps)}


def start(workdir: Path, trees: list[tuple[str, Path]], otlp_url: str, started: list[procs.Proc]) -> list[Server]:
    """The fake upstream and one gateway per tree, each with the probe; `started` gets each process as it starts."""
    fake_port = procs.free_port()
    fake = procs.start(procs.python_module("tests.fakes.openai_upstream", "--port", str(fake_port)),
                       env=_env(trees[0][1], workdir / "stamps-direct.json"), name="fake")
    started.append(fake)
    procs.wait_http(f"http://127.0.0.1:{fake_port}/health", fake)
    config = workdir / "policy.yaml"
    config.write_text(POLICY.format(port=fake_port))
    servers = [Server("direct", fake_port, "none", "m")]
    for name, tree in trees:
        env = {"HYBRIDGW_DATA_DIR": str(workdir / f"data-{name}"), "REDIS_URL": "", "HYBRIDGW_WORKERS": "1",
               "HYBRIDGW_TRACES": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_url}
        key = create_key(config, {**env, "PYTHONPATH": str(tree)}, cwd=tree)
        port = procs.free_port()
        gw = procs.start([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
                         env={**env, **_env(tree, workdir / f"stamps-{name}.json")}, cwd=tree, name=name)
        started.append(gw)
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", gw, timeout_s=120)
        servers.append(Server(name, port, key, "m"))
    return servers


async def measure(servers: list[Server], n: int, rounds: int, errors: Counter[str]) -> dict[str, list[tuple[float, float]]]:
    """Each server's (client wall time at send, E2E) at 1 in flight, rounds interleaved."""
    out: dict[str, list[tuple[float, float]]] = {s.name: [] for s in servers}
    pools = {s.name: client(s) for s in servers}
    try:
        for s in servers:
            await closed_loop(s, pools[s.name], request(s, False, 0), 16, 300, None, errors)
        for _ in range(rounds):
            for s in servers:
                records = await closed_loop(s, pools[s.name], request(s, False, 0), 1, n, None, errors)
                out[s.name] += [(r.wall_time, r.end_s - r.send_s) for r in records if r.ok]
    finally:
        for pool in pools.values():
            pool.close()
    return out


def _after(stamps: list[Stamp], times: list[float], kind: str, t: float, until: float) -> Stamp | None:
    i = bisect.bisect_left(times, t)
    while i < len(stamps) and stamps[i][1] <= until:
        if stamps[i][0] == kind:
            return stamps[i]
        i += 1
    return None


def _last_before(stamps: list[Stamp], times: list[float], kind: str, t: float) -> Stamp | None:
    i = bisect.bisect_left(times, t) - 1
    while i >= 0 and stamps[i][0] != kind:
        i -= 1
    return stamps[i] if i >= 0 else None


def stages(sent: list[tuple[float, float]], stamps: list[Stamp], gateway: bool) -> dict[str, list[float]]:
    """Per request (matched by time to the client's sends), each stage in seconds."""
    stamps = sorted(stamps, key=lambda s: s[1])
    times = [s[1] for s in stamps]
    rows: dict[str, list[float]] = {}
    put = lambda k, v: rows.setdefault(k, []).append(v)  # noqa: E731
    for wall, e2e in sent:
        end = wall + e2e
        got = _after(stamps, times, "request in", wall - 0.001, end)
        out = got and _after(stamps, times, "body out", got[1], end)
        if got is None or out is None:
            continue
        put("E2E at the client", e2e)
        put("client sent → request in", got[1] - wall)
        put("body out → client end", end - out[1])
        if not gateway:
            put("request in → body out (the fake's 20 ms + its work)", out[1] - got[1])
            continue
        up = _after(stamps, times, "upstream send", got[1], out[1])
        back = _after(stamps, times, "upstream in", got[1], out[1])
        last = _last_before(stamps, times, "upstream in", out[1])
        begin = _after(stamps, times, "record start", out[1], out[1] + 1.0)
        done = begin and _after(stamps, times, "record end", begin[1], begin[1] + 1.0)
        if up is None or back is None or last is None or begin is None or done is None:
            continue
        for name, a, b in (("before the call: request in → upstream send", got, up),
                           ("after the answer: upstream in → body out", last, out)):
            put(f"{name} (wall)", b[1] - a[1])
            put(f"{name} (loop CPU)", b[2] - a[2])
            put(f"{name} (run-queue wait)", b[3] - a[3])
            put(f"{name} (off CPU, not queued: the GIL)", max(0.0, (b[1] - a[1]) - (b[2] - a[2]) - (b[3] - a[3])))
        put("upstream send → upstream in", back[1] - up[1])
        put("body out → usage record made (wall)", begin[1] - out[1])
        put("the usage record: finish() (loop CPU)", done[2] - begin[2])
    return rows


def report(sent: dict[str, list[tuple[float, float]]], workdir: Path) -> str:
    lines = []
    direct = sorted(e for _, e in sent["direct"])
    q = lambda v, p: sorted(v)[int(p * (len(v) - 1))] * 1e3  # noqa: E731
    for name, rows in sent.items():
        stamps = json.loads((workdir / f"stamps-{name}.json").read_text())
        table = stages(rows, [tuple(s) for s in stamps], name != "direct")
        e2e = [e for _, e in rows]
        added = "" if name == "direct" else f"; added p50 / p99 {q(e2e, .5) - q(direct, .5):+.2f} / " \
                                            f"{q(e2e, .99) - q(direct, .99):+.2f} ms"
        lines += ["", f"{name}: {len(rows)} requests, {len(next(iter(table.values()), []))} matched to stamps{added}",
                  "| stage | p10 | p50 | p90 | p99 | mean (ms) |", "|---|---|---|---|---|---|"]
        for stage, values in table.items():
            lines.append(f"| {stage} | {q(values, .1):.3f} | {q(values, .5):.3f} | {q(values, .9):.3f} | "
                         f"{q(values, .99):.3f} | "
                         f"{statistics.fmean(values) * 1e3:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH: a hybridgw from this source tree")
    parser.add_argument("--requests", type=int, default=200, help="per round and server, at concurrency 1")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = [(n, Path(p).resolve()) for n, p in (t.split("=", 1) for t in args.tree)] or [("hybridgw", here)]
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    errors: Counter[str] = Counter()
    sink, otlp_url = start_discard()
    with tempfile.TemporaryDirectory(prefix="hybridgw-stages-") as tmp:
        started: list[procs.Proc] = []
        try:
            servers = start(Path(tmp), trees, otlp_url, started)
            sent = asyncio.run(measure(servers, args.requests, args.rounds, errors))
        finally:
            for proc in reversed(started):  # SIGTERM: each probe writes its stamps at exit
                procs.stop(proc)
            sink.shutdown()
        print(report(sent, Path(tmp)))
    return finish(errors)


if __name__ == "__main__":
    raise SystemExit(main())
