"""What one relayed SSE chunk costs the gateway, apart from its request: paced streams of two lengths
(each chunk its own upstream read and client write, as from a decoding model) through one or more
source trees side by side, interleaved round by round. CPU is read per stream from the gateway's /proc
stat, user and kernel apart, and for its event-loop thread alone; the slope between the two lengths is
the cost of one more chunk, the intercept the stream's fixed (request) cost. Full path on, as in
bench/hot_path.py (limits, a USD budget, the SQLite ledger, the access log, OTLP tracing).

Run: .venv/bin/python -m bench.hot_path_relay [--tree NAME=PATH ...] [--streams 128] [--chunks 8 40]
     [--gap-ms 20] [--rounds 3] [--profile DIR] [--pyspy FILE]
--profile: cProfile the first tree's loop thread; --pyspy: sample it with py-spy (--native, collapsed stacks
to FILE; py-spy from $PYSPY, default the one on PATH: `pip install --target DIR py-spy`).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.gateway_overhead import Server, client, closed_loop
from bench.hot_path import key_of, start_gateway
from bench.hot_path_spy import start_pyspy, stop_pyspy
from bench.otlp_discard import start_discard
from bench.run_report import finish
from bench.stack import start_fake
from bench.workers_throughput import POLICY
from observability.bench.client import Sent
from observability.bench.records import RequestRecord
from tests.support import procs

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    user: float
    system: float
    loop: float  # the event-loop thread's user + system

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.user - other.user, self.system - other.system, self.loop - other.loop)


def _fields(path: Path) -> list[str]:
    return path.read_text().rsplit(")", 1)[1].split()


def cpu_of(pid: int) -> Cpu:
    whole, loop = _fields(Path(f"/proc/{pid}/stat")), _fields(Path(f"/proc/{pid}/task/{pid}/stat"))
    return Cpu(int(whole[11]) / TICK, int(whole[12]) / TICK, (int(loop[11]) + int(loop[12])) / TICK)


def streamed(server: Server, chunks: int, gap_ms: float) -> Sent:
    body = {"model": server.model, "messages": [{"role": "user", "content": "say something short"}],
            "max_tokens": chunks, "stream": True, "user": f"fake:delay_ms={gap_ms};chunks={chunks}"}
    return Sent(json.dumps(body).encode(), server.key, RequestRecord(0, "relay", "bench", 0, 0, 0.0, 0.0))


async def per_stream(server: Server, pid: int, streams: int, chunks: int, gap_ms: float,
                     errors: Counter[str]) -> Cpu:
    """CPU seconds per stream over `streams` concurrent paced streams of `chunks` content chunks."""
    pool = client(server)
    try:
        before = cpu_of(pid)
        await closed_loop(server, pool, streamed(server, chunks, gap_ms), streams, streams, None, errors)
        spent = cpu_of(pid) - before
        return Cpu(spent.user / streams, spent.system / streams, spent.loop / streams)
    finally:
        pool.close()


async def measure(gateways: list[tuple[Server, int]], streams: int, lengths: tuple[int, int], gap_ms: float,
                  rounds: int, errors: Counter[str], profiled: int | None,
                  pyspy: Path | None = None) -> dict[str, dict[int, list[Cpu]]]:
    out: dict[str, dict[int, list[Cpu]]] = {s.name: {n: [] for n in lengths} for s, _ in gateways}
    for server, pid in gateways:  # warm-up: connections, caches, lazy imports
        await per_stream(server, pid, streams, lengths[0], 0, errors)
    if profiled is not None:
        os.kill(profiled, signal.SIGUSR1)
    spy = start_pyspy(gateways[0][1], pyspy) if pyspy is not None else None
    for _ in range(rounds):  # interleaved, so the machine's noise hits every tree alike
        for server, pid in gateways:
            for n in lengths:
                out[server.name][n].append(await per_stream(server, pid, streams, n, gap_ms, errors))
    if profiled is not None:
        os.kill(profiled, signal.SIGUSR2)
    if spy is not None:
        stop_pyspy(spy)
    return out


def report(results: dict[str, dict[int, list[Cpu]]], lengths: tuple[int, int]) -> str:
    """Per tree: the medians of each round's own figures (a round's slope is its two lengths' difference),
    with the rounds' range, since on a shared machine one round can be far off."""
    short, long_ = lengths
    med = statistics.median
    lines = [f"| tree | CPU per stream, {short} / {long_} chunks (ms) | per extra chunk (µs; rounds' range) | user / kernel "
             f"(µs) | loop thread (µs) | fixed per stream (ms, intercept) | all-in per frame at {short} chunks (µs, "
             f"/{short + 1}) |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        pairs = list(zip(r[short], r[long_]))
        slopes = sorted(((b.user + b.system) - (a.user + a.system)) / (long_ - short) for a, b in pairs)
        user = med((b.user - a.user) / (long_ - short) for a, b in pairs)
        system = med((b.system - a.system) / (long_ - short) for a, b in pairs)
        loop = med((b.loop - a.loop) / (long_ - short) for a, b in pairs)
        a = med(c.user + c.system for c in r[short])
        b = med(c.user + c.system for c in r[long_])
        slope = med(slopes)
        lines.append(f"| {name} | {a * 1e3:.2f} / {b * 1e3:.2f} | **{slope * 1e6:.0f}** ({slopes[0] * 1e6:.0f}–"
                     f"{slopes[-1] * 1e6:.0f}) | {user * 1e6:.0f} / {system * 1e6:.0f} | {loop * 1e6:.0f} | "
                     f"{(a - short * slope) * 1e3:.2f} | {a / (short + 1) * 1e6:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[],
                        help="NAME=PATH[+SERVER] of a source tree (default: this one); SERVER as in bench/hot_path.py")
    parser.add_argument("--streams", type=int, default=128, help="concurrent streams per sample")
    parser.add_argument("--chunks", type=int, nargs=2, default=[8, 40], help="the two stream lengths")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="the upstream's pause between chunks")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="cProfile the first tree's loop thread; stats in this folder")
    parser.add_argument("--pyspy", type=Path, help="sample the first tree's gateway with py-spy into this file")
    args = parser.parse_args()
    specs = [(n, *p.partition("+")[::2]) for n, p in (t.split("=", 1) for t in args.tree)]
    trees = [(n, Path(p).resolve(), server or "uvicorn") for n, p, server in specs] or [("this", ROOT, "uvicorn")]
    lengths = (args.chunks[0], args.chunks[1])
    print(f"load average at start: {os.getloadavg()[0]:.2f} (a shared machine: compare only side by side)")
    errors: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="hybridgw-relay-") as tmp:
        workdir = Path(tmp)
        fake, fake_port = start_fake()
        started = [fake]
        sink, otlp_url = start_discard()
        try:
            config = workdir / "policy.yaml"
            config.write_text(POLICY.format(port=fake_port))
            gateways, profiled = [], None
            for i, (name, tree, server) in enumerate(trees):
                key = key_of(tree, config, workdir, name)
                prof = None
                if args.profile is not None and i == 0:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    prof = args.profile / f"{name}.prof"
                gw = start_gateway(name, tree, config, workdir, prof, "otlp", otlp_url, server=server)
                started.append(gw)
                gateways.append((Server(name, gw.port, key, "m"), gw.popen.pid))  # type: ignore[attr-defined]
                profiled = gw.popen.pid if prof is not None else profiled
            results = asyncio.run(measure(gateways, args.streams, lengths, args.gap_ms, args.rounds, errors,
                                          profiled, args.pyspy))
            if args.profile is not None:
                path = args.profile / f"{trees[0][0]}.prof"
                procs.wait_until(lambda: path.exists() and path.stat().st_size > 0, "the profile")
        finally:
            for proc in started:
                procs.stop(proc)
            sink.shutdown()
    print(report(results, lengths))
    return finish(errors)


if __name__ == "__main__":
    raise SystemExit(main())
