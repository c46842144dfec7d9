"""`hybridgw bench`'s own ceiling: streamed 16-chunk requests/s it drives against a no-delay server
that is not the bottleneck (bench/sse_server.py: pre-encoded replies, --workers processes on one
port), side by side with AIPerf on the same target and with `hybridgw serve` in front of it (the
gateway's own ceiling, for "≥ 3× what the gateway can serve"). Rounds alternate the targets so the
shared machine's noise falls on all of them; the client's CPU per request is printed too.

    .venv/bin/python bench/bench_client_ceiling.py [--requests 4000] [--concurrency 64] [--rounds 3]
        [--workers 2] [--split] [--aiperf-requests 2000] [--gateway-requests 1000] [--no-aiperf] [--no-gateway]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_vs_aiperf import aiperf, children_cpu
from tests.support import procs

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HYBRIDGW_WORKERS": os.environ.get("HYBRIDGW_WORKERS", "1")}


def ours(url: str, a: argparse.Namespace, out: Path, key: str = "none", count: int = 0) -> dict[str, float]:
    cmd = procs.hybridgw(
        "bench", url, "--model", "m", "--api-key", key, "--isl", "32", "--osl", str(a.chunks),
        "--requests", str(count or a.requests), "--warmup", "200", "--concurrency", str(a.concurrency),
        "--no-progress", "--out", str(out),
    )  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, env=ENV)
    if done.returncode != 0:
        raise SystemExit(f"bench failed: {done.stdout[-1000:]}{done.stderr[-2000:]}")
    body = json.loads((out / "results.json").read_text())
    s, settings = body["summary"], body["settings"]
    return {
        "req_per_s": s["request_throughput"],
        "client_cpu_s": settings["client_cpu_s"],
        "client_wall_s": settings["client_wall_s"],
        "client_cpu_us_per_request": settings["client_cpu_s"] / (s["requests"] + 200) * 1e6,  # warm-up too
        "errors": float(sum(s["errors"].values())),
    }


def theirs(url: str, a: argparse.Namespace, out: Path) -> dict[str, float]:
    opts = argparse.Namespace(
        model="m",
        concurrency=a.concurrency,
        requests=a.aiperf_requests,
        warmup=200,
        isl=32,
        osl=a.chunks,
        rate=None,
        engine_spans=False,
    )
    cpu0 = children_cpu()
    r = aiperf(url, opts, out)
    return {"req_per_s": r["req_per_s"], "tool_cpu_s": children_cpu() - cpu0}


def gateway(workdir: Path, upstream: str) -> tuple[list[str], dict[str, str], str, str]:
    """`hybridgw serve` in front of the upstream: its command line, environment, URL and a key."""
    config, port = workdir / "policy.yaml", procs.free_port()
    config.write_text(
        f"backends:\n  up: {{kind: openai, base_url: '{upstream}/v1'}}\n"
        "models:\n  m: {deployments: [{backend: up, model: m}]}\nteams:\n  bench: {}\n"
    )
    env = {**ENV, "HYBRIDGW_DATA_DIR": str(workdir / "data")}
    keys = procs.hybridgw("keys", "--config", str(config), "create", "--team", "bench")
    key = subprocess.run(keys, env=env, capture_output=True, text=True, check=True).stdout.strip()
    cmd = procs.hybridgw("serve", "--config", str(config), "--port", str(port))
    return cmd, env, f"http://127.0.0.1:{port}", key


def measure(url: str, a: argparse.Namespace, tmp: Path, gw: tuple[str, str] | None) -> dict[str, list]:
    runs: dict[str, list[dict[str, float]]] = {"hybridgw bench": [], "aiperf": [], "gateway": []}
    for i in range(a.rounds):
        print(f"round {i}: load average {os.getloadavg()[0]:.2f}", flush=True)
        runs["hybridgw bench"].append(ours(url, a, tmp / f"ours{i}"))
        if not a.no_aiperf:
            runs["aiperf"].append(theirs(url, a, tmp / f"aiperf{i}"))
        if gw is not None:
            runs["gateway"].append(ours(gw[0], a, tmp / f"gw{i}", gw[1], a.gateway_requests))
        for name, rs in runs.items():
            if len(rs) > i:
                print(json.dumps({"target": name, **{k: round(v, 2) for k, v in rs[i].items()}}), flush=True)
    return runs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--aiperf-requests", type=int, default=2000)
    p.add_argument("--gateway-requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="server processes sharing the port")
    p.add_argument("--split", action="store_true", help="the server sends each SSE event on its own")
    p.add_argument("--no-aiperf", action="store_true")
    p.add_argument("--no-gateway", action="store_true")
    a = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared)")
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    server = [
        "-m",
        "bench.sse_server",
        "--port",
        str(port),
        "--chunks",
        str(a.chunks),
        "--workers",
        str(a.workers),
    ]
    with (
        tempfile.TemporaryDirectory() as tmp,
        procs.running([sys.executable, *server, *(["--split"] if a.split else [])], f"{url}/v1/models",
                      name="sse-server", cwd=ROOT),
    ):  # fmt: skip
        if a.no_gateway:
            runs = measure(url, a, Path(tmp), None)
        else:
            cmd, env, gw_url, key = gateway(Path(tmp), url)
            with procs.running(cmd, f"{gw_url}/healthz", env=env, name="gateway", cwd=ROOT):
                runs = measure(url, a, Path(tmp), (gw_url, key))
    print(f"medians over {a.rounds} rounds, {a.chunks}-chunk streams at concurrency {a.concurrency}:")
    for name, rs in runs.items():
        if rs:
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            print(f"  {name:<15} " + "  ".join(f"{k} {v:.1f}" for k, v in med.items()))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
