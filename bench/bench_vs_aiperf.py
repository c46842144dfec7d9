"""`hybridgw bench` cross-checked against NVIDIA AIPerf on the same `hybridgw engine` with the same
workload in one run (chat, streamed, fixed ISL/OSL, ignore_eos + min_tokens, closed loop), the two
alternating so the shared machine's noise falls on both; prints each p50 side by side.

AIPerf's names for the same definitions: inter_chunk_latency = our ITL (every gap, pooled),
inter_token_latency = our TPOT, request_latency = E2E. AIPerf counts output tokens with the
server's usage here (--use-server-token-count), as we do. Peer: ../shared/peers/aiperf.sh.

    .venv/bin/python bench/bench_vs_aiperf.py [--url URL] [--concurrency 4] [--requests 20] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies.offline import litellm_tokenizers_dir
from tests.support import procs

PEER = ROOT.parent / "shared" / "peers" / "aiperf.sh"
METRICS = ("ttft", "itl", "tpot", "e2e")


def ours(url: str, a: argparse.Namespace, out: Path) -> dict[str, float]:
    cmd = procs.hybridgw(
        "bench",
        url,
        "--model",
        a.model,
        "--isl",
        str(a.isl),
        "--osl",
        str(a.osl),
        "--ignore-eos",
        "--concurrency",
        str(a.concurrency),
        "--requests",
        str(a.requests),
        "--warmup",
        str(a.warmup),
        "--no-progress",
        "--out",
        str(out),
    )
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"hybridgw bench failed: {done.stderr[-2000:]}")
    s = json.loads((out / "results.json").read_text())["summary"]
    return {m: s[m]["p50"] * 1000 for m in METRICS} | {"req_per_s": s["request_throughput"]}


def aiperf(url: str, a: argparse.Namespace, out: Path) -> dict[str, float]:
    cmd = [
        str(PEER),
        "profile",
        "--url",
        url,
        "--model",
        a.model,
        "--endpoint-type",
        "chat",
        "--streaming",
        "--concurrency",
        str(a.concurrency),
        "--request-count",
        str(a.requests),
        "--warmup-request-count",
        str(a.warmup),
        "--synthetic-input-tokens-mean",
        str(a.isl),
        "--synthetic-input-tokens-stddev",
        "0",
        "--output-tokens-mean",
        str(a.osl),
        "--output-tokens-stddev",
        "0",
        "--extra-inputs",
        "ignore_eos:true",
        "--extra-inputs",
        f"min_tokens:{a.osl}",
        "--use-server-token-count",
        "--ui-type",
        "none",
        "--artifact-dir",
        str(out),
    ]
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(litellm_tokenizers_dir())}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"aiperf failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    d = json.loads((out / "profile_export_aiperf.json").read_text())
    names = {
        "ttft": "time_to_first_token",
        "itl": "inter_chunk_latency",
        "tpot": "inter_token_latency",
        "e2e": "request_latency",
    }
    return {m: d[names[m]]["p50"] for m in METRICS} | {"req_per_s": d["request_throughput"]["avg"]}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def compare(url: str, a: argparse.Namespace) -> None:
    runs: dict[str, list[dict[str, float]]] = {"hybridgw": [], "aiperf": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.rounds):
            for name, fn in (("hybridgw", ours), ("aiperf", aiperf)):
                cpu0 = _children_cpu()
                r = fn(url, a, Path(tmp) / f"{name}{i}")
                r["tool_cpu_s"] = _children_cpu() - cpu0  # the tool's own processes, start-up included
                print(
                    json.dumps({"tool": name, "round": i, **{k: round(v, 2) for k, v in r.items()}}),
                    flush=True,
                )
                runs[name].append(r)
    print(f"{'p50 (ms)':<10} {'hybridgw':>10} {'aiperf':>10} {'ratio':>7}")
    for m in (*METRICS, "req_per_s", "tool_cpu_s"):
        x, y = (statistics.median(r[m] for r in runs[n]) for n in ("hybridgw", "aiperf"))
        print(f"{m:<10} {x:>10.1f} {y:>10.1f} {x / y:>7.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running engine (default: start `hybridgw engine --model tiny-random`)")
    p.add_argument("--model", default="tiny-random")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--isl", type=int, default=64)
    p.add_argument("--osl", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--scripted",
        action="store_true",
        help="against tests/fakes/scripted_sse.py instead: fixed "
        "TTFT 200 ms and gaps of 50 ms that no CPU load moves, so only the definitions can differ",
    )
    a = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared)")
    if a.url:
        compare(a.url, a)
    elif a.scripted:
        a.model = f"scripted;ttft_ms=200;itl_ms=50;chunks={a.osl}"
        port = procs.free_port()
        url = f"http://127.0.0.1:{port}"
        with procs.running(
            procs.python_module("tests.fakes.scripted_sse", "--port", str(port)),
            f"{url}/health",
            name="scripted-sse",
            cwd=ROOT,
        ):
            compare(url, a)
    else:
        port = procs.free_port()
        url = f"http://127.0.0.1:{port}"
        with procs.running(
            procs.hybridgw("engine", "--model", a.model, "--port", str(port)),
            f"{url}/health",
            name="engine",
            timeout_s=300,
            cwd=ROOT,
        ):
            compare(url, a)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
