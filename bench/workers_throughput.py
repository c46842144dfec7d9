"""`hybridgw serve --workers 2` vs `--workers 1`, side by side in one run: non-streamed requests/s at
concurrency 32 against the fake upstream answering after 20 ms, with the full path on (auth, routing,
rpm + tpm limits and a USD budget — counted by the supervisor's shared counts with 2 workers —, the
SQLite ledger, access log). The load generator is `hybridgw bench`'s raw asyncio client in this
process, on the same machine: on a 2-core box it competes with the workers for the cores.

Run: .venv/bin/python -m bench.workers_throughput [--seconds 6] [--rounds 3] [--concurrency 32] [--workers 1,2]
--workers: the worker counts to compare, side by side (the first is the baseline).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path

from bench.gateway_overhead import MAX_RPS, Server, client, closed_loop
from bench.run_report import finish
from observability.bench.client import Sent
from observability.bench.metrics import summarize
from observability.bench.records import RequestRecord
from tests.support import procs

UPSTREAM_MS = 20
ADMIN_KEY = "bench-admin-key"
POLICY = """
backends:
  up: {{kind: openai, base_url: 'http://127.0.0.1:{port}/v1', price: {{input_usd_per_mtok: 1, output_usd_per_mtok: 2}}}}
models:
  m: {{deployments: [{{backend: up, model: m}}]}}
teams:
  bench:
    limits: {{requests_per_minute: 100000000, tokens_per_minute: 100000000000}}
    budget: {{usd_per_day: 1000000}}
"""


def one_request(server: Server) -> Sent:
    body = {"model": server.model, "messages": [{"role": "user", "content": "say something short"}],
            "max_tokens": 16, "user": f"fake:ttft_ms={UPSTREAM_MS}"}
    return Sent(json.dumps(body).encode(), server.key, RequestRecord(0, "workers", "bench", 0, 0, 0.0, 0.0))


def start_stack(workdir: Path, counts: tuple[int, ...] = (1, 2)) -> tuple[list[Server], list[procs.Proc]]:
    fake_port = procs.free_port()
    fake = procs.start(procs.python_module("tests.fakes.openai_upstream", "--port", str(fake_port)), name="fake")
    procs.wait_http(f"http://127.0.0.1:{fake_port}/health", fake)
    config = workdir / "policy.yaml"
    config.write_text(POLICY.format(port=fake_port))
    servers, started = [Server("direct", fake_port, "none", "m")], [fake]
    for workers in counts:
        env = {"HYBRIDGW_DATA_DIR": str(workdir / f"data{workers}"), "REDIS_URL": "", "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
        key = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "--config", str(config), "create",
                              "--team", "bench"], env={**os.environ, **env}, capture_output=True, text=True,
                             check=True).stdout.strip()
        port = procs.free_port()
        gw = procs.start([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port),
                          "--workers", str(workers)], env=env,
                         name=f"gateway-{workers}")
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", gw, timeout_s=120)
        started.append(gw)
        servers.append(Server(f"hybridgw --workers {workers}", port, key, "m"))
    return servers, started


def processes(server: Server) -> dict[str, int]:
    """The gateway's processes by role, from its /readyz."""
    ask = urllib.request.Request(f"http://127.0.0.1:{server.port}/readyz",
                                 headers={"authorization": f"Bearer {ADMIN_KEY}"})  # pids: admin only
    with urllib.request.urlopen(ask, timeout=10) as response:
        workers = json.load(response)["workers"]
    if "supervisor_pid" not in workers:
        return {"worker": workers["pid"]}
    return {"supervisor": workers["supervisor_pid"], **{f"worker {i}": pid for i, pid in enumerate(workers["pids"])}}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(servers: list[Server], seconds: float, rounds: int, concurrency: int,
                  errors: Counter[str]) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    """Requests/s per round, and the CPU seconds each gateway process spent in the measured rounds."""
    rps: dict[str, list[float]] = {s.name: [] for s in servers}
    pools = {s.name: client(s) for s in servers}
    try:
        for s in servers:  # warm-up: connections (spread over the workers), caches, lazy imports
            await closed_loop(s, pools[s.name], one_request(s), concurrency, int(MAX_RPS), 1.5, errors)
        pids = {s.name: processes(s) for s in servers if s.name != "direct"}
        before = {name: {role: cpu_s(pid) for role, pid in p.items()} for name, p in pids.items()}
        for _ in range(rounds):  # interleaved, so the machine's noise hits every server alike
            for s in servers:
                records = await closed_loop(s, pools[s.name], one_request(s), concurrency,
                                            int(seconds * MAX_RPS), seconds, errors)
                rps[s.name].append(summarize(records).request_throughput)
    finally:
        for pool in pools.values():
            pool.close()
    cpu = {name: {role: cpu_s(pid) - before[name][role] for role, pid in p.items()} for name, p in pids.items()}
    return rps, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated (first: the baseline)")
    args = parser.parse_args()
    counts = tuple(int(n) for n in args.workers.split(","))
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f} (a shared machine)")
    errors: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="hybridgw-bench-") as tmp:
        servers, started = start_stack(Path(tmp), counts)
        try:
            rps, cpu = asyncio.run(measure(servers, args.seconds, args.rounds, args.concurrency, errors))
        finally:
            for proc in started:
                procs.stop(proc)
    base = f"hybridgw --workers {counts[0]}"
    one = statistics.median(rps[base])
    print(f"| path | req/s at {args.concurrency}, non-streamed, {UPSTREAM_MS} ms upstream (median of "
          f"{args.rounds}) | rounds | vs --workers {counts[0]} |\n|---|---|---|---|")
    for name, values in rps.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} | {' / '.join(f'{v:.0f}' for v in values)} | {median / one:.2f}× |")
    for name, roles in cpu.items():  # how evenly the kernel spread the connections, what the counts cost
        served = sum(rps[name]) * args.seconds
        print(f"{name}: CPU s in the measured rounds: " + ", ".join(f"{r} {v:.1f}" for r, v in roles.items())
              + f"; {sum(roles.values()) / served * 1e3:.2f} ms CPU per request over {served:.0f} requests")
    return finish(errors)


if __name__ == "__main__":
    raise SystemExit(main())
