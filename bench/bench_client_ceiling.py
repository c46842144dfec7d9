"""`hybridgw bench`'s own ceiling: against a no-delay server (tests/fakes/scripted_sse.py, 16
content chunks per stream) how many streamed requests/s it drives, and its CPU per request — the
figure that says when the client, not the server, would be the bottleneck. On a 2-core machine the
one-process server saturates first, so the client's ceiling is read from its CPU time:
requests per CPU-second of the client process.

    .venv/bin/python bench/bench_client_ceiling.py [--requests 4000] [--concurrency 64] [--rounds 3]
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

from tests.support import procs


def one_round(url: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    cmd = procs.hybridgw(
        "bench",
        url,
        "--model",
        f"m;chunks={args.chunks}",
        "--isl",
        "32",
        "--osl",
        str(args.chunks),
        "--requests",
        str(args.requests),
        "--warmup",
        "200",
        "--concurrency",
        str(args.concurrency),
        "--no-progress",
        "--out",
        str(out),
    )
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode != 0:
        raise SystemExit(f"bench failed: {done.stderr[-2000:]}")
    body = json.loads((out / "results.json").read_text())
    s, settings = body["summary"], body["settings"]
    sent = s["requests"] + args.warmup
    return {
        "req_per_s": s["request_throughput"],
        "client_cpu_s": settings["client_cpu_s"],
        "client_wall_s": settings["client_wall_s"],
        "client_cpu_us_per_request": settings["client_cpu_s"] / sent * 1e6,
        "client_ceiling_req_per_cpu_s": sent / settings["client_cpu_s"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    args.warmup = 200
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared)")
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    rounds = []
    with (
        procs.running(
            procs.python_module("tests.fakes.scripted_sse", "--port", str(port)),
            f"{url}/health",
            name="scripted-sse",
            cwd=ROOT,
        ),
        tempfile.TemporaryDirectory() as tmp,
    ):
        for i in range(args.rounds):
            r = one_round(url, args, Path(tmp) / str(i))
            print(json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
            rounds.append(r)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(
        f"median over {args.rounds} rounds: {med['req_per_s']:.0f} req/s achieved (server-bound), client "
        f"{med['client_cpu_us_per_request']:.0f} µs CPU per request → ceiling "
        f"{med['client_ceiling_req_per_cpu_s']:.0f} streamed requests/s per client core"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
