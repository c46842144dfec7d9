"""`hybridgw bench` cross-checked against NVIDIA AIPerf on the same `hybridgw engine` with the same
workload in one run (chat, streamed, fixed ISL/OSL, ignore_eos + min_tokens, closed loop), the two
alternating round by round so the shared machine's noise falls on both; prints each p50 side by side
and, for each run, what the engine itself measured in that window (its /metrics before and after:
mean TTFT, mean ITL, prompt tokens per request) — which says whether a difference is the tools'
clocks or the engine running slower while one of them ran.

AIPerf's names for the same definitions: inter_chunk_latency = our ITL (every gap, pooled),
inter_token_latency = our TPOT, request_latency = E2E. AIPerf counts output tokens with the
server's usage here (--use-server-token-count), as we do; its own /metrics polling (every ~0.3 s)
and GPU telemetry are switched off so both tools put the same load on the engine. Each run gets its
own seed, so neither reuses the previous run's prompts from the prefix cache. --pin puts the engine
on CPU 0 and the tools on CPU 1; --together runs both tools at once (the engine then serves both,
at the same speed for both); --rate R makes both open loops (Poisson), which cannot fall into step
with each other as two closed loops at concurrency 1 do when a prefill spans many engine steps;
--engine-spans matches every request of both tools to the engine's own span for it (its arrival,
first token, finish), splitting a difference into the engine's and each tool's clock's.
Peer: ../shared/peers/aiperf.sh.

    .venv/bin/python bench/bench_vs_aiperf.py [--url URL] [--model tiny-random|smollm2] [--engine-threads N] [--engine-budget N] [--isl 64] [--osl 16]
        [--concurrency 1 | --rate R] [--requests 40] [--rounds 2] [--pin] [--together] [--engine-spans]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import engine_spans
from policies.offline import litellm_tokenizers_dir
from tests.support import procs

PEER = ROOT.parent / "shared" / "peers" / "aiperf.sh"
METRICS = ("ttft", "itl", "tpot", "e2e")
ENGINE = {  # the engine's own histograms and counters (local_engine/metrics.py)
    "ttft_s": "gen_ai_server_time_to_first_token_seconds_sum",
    "ttft_n": "gen_ai_server_time_to_first_token_seconds_count",
    "itl_s": "gen_ai_server_time_per_output_token_seconds_sum",
    "itl_n": "gen_ai_server_time_per_output_token_seconds_count",
    "prompt": "hybridgw_engine_prompt_tokens_total",
}


def ours(url: str, a: argparse.Namespace, out: Path, seed: int = 0) -> dict[str, float]:
    cmd = a.tool_prefix + procs.hybridgw(
        "bench",
        url,
        "--model",
        a.model,
        "--isl",
        str(a.isl),
        "--osl",
        str(a.osl),
        "--ignore-eos",
        *(
            ("--rate", str(a.rate), "--arrival", "poisson")
            if a.rate
            else ("--concurrency", str(a.concurrency))
        ),
        "--requests",
        str(a.requests),
        "--warmup",
        str(a.warmup),
        "--seed",
        str(seed),
        "--no-progress",
        *(("--header", f"traceparent:{engine_spans.TRACEPARENT}") if a.engine_spans else ()),
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
    means = {f"{m}_mean": s[m]["mean"] * 1000 for m in ("ttft", "itl")}
    return {m: s[m]["p50"] * 1000 for m in METRICS} | means | {"req_per_s": s["request_throughput"]}


def aiperf(url: str, a: argparse.Namespace, out: Path, seed: int = 0) -> dict[str, float]:
    cmd = [
        *getattr(a, "tool_prefix", []),
        str(PEER),
        "profile",
        "--url",
        url,
        "--model",
        a.model,
        "--endpoint-type",
        "chat",
        "--streaming",
        *(
            ("--request-rate", str(a.rate), "--arrival-pattern", "poisson")
            if a.rate
            else ("--concurrency", str(a.concurrency))
        ),
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
        "--no-server-metrics",
        "--no-gpu-telemetry",
        "--random-seed",
        str(seed),
        "--ui-type",
        "none",
        *(("--header", f"traceparent:{engine_spans.TRACEPARENT}") if a.engine_spans else ()),
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
    means = {f"{m}_mean": d[names[m]]["avg"] for m in ("ttft", "itl")}
    return {m: d[names[m]]["p50"] for m in METRICS} | means | {"req_per_s": d["request_throughput"]["avg"]}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def engine_counters(url: str) -> dict[str, float]:
    """The engine's cumulative TTFT/ITL sums and counts and prompt tokens, from its /metrics."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:  # not our engine (a scripted server, another server): no engine view
        text = ""
    found = {}
    for key, name in ENGINE.items():
        m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        found[key] = float(m.group(1)) if m else float("nan")
    return found


def engine_view(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the engine measured between two scrapes: mean TTFT and ITL (ms), prompt tokens/request."""
    d = {k: after[k] - before[k] for k in ENGINE}
    n = d["ttft_n"] or float("nan")
    return {
        "eng_ttft_mean": d["ttft_s"] / n * 1000,
        "eng_itl_mean": d["itl_s"] / (d["itl_n"] or float("nan")) * 1000,
        "eng_prompt_tokens": d["prompt"] / n,
    }


def one_run(name: str, url: str, a: argparse.Namespace, out: Path, seed: int) -> dict[str, float]:
    load, cpu0, eng0 = os.getloadavg()[0], children_cpu(), engine_counters(url)
    r = (ours if name == "hybridgw" else aiperf)(url, a, out, seed)
    r |= engine_view(eng0, engine_counters(url))
    r["tool_cpu_s"] = children_cpu() - cpu0  # the tool's own processes, start-up included
    r["load_avg"] = load
    return r


def together(url: str, a: argparse.Namespace, tmp: Path, i: int) -> dict[str, dict[str, float]]:
    """Both tools at once on the same engine: AIPerf first (its start-up is slow), `hybridgw bench` as
    soon as the engine has served AIPerf's warm-up, so both measure the same engine at the same time."""
    load, eng0 = os.getloadavg()[0], engine_counters(url)
    with ThreadPoolExecutor(2) as pool:
        theirs = pool.submit(aiperf, url, a, tmp / f"aiperf{i}", 1001 + 2 * i)
        while engine_counters(url)["ttft_n"] - eng0["ttft_n"] <= a.warmup and not theirs.done():
            time.sleep(0.05)
        r = {"hybridgw": ours(url, a, tmp / f"hybridgw{i}", 1000 + 2 * i), "aiperf": theirs.result()}
    view = engine_view(eng0, engine_counters(url))  # one window for both: the engine's speed is shared
    return {k: v | view | {"tool_cpu_s": float("nan"), "load_avg": load} for k, v in r.items()}


def compare(url: str, a: argparse.Namespace) -> None:
    runs: dict[str, list[dict[str, float]]] = {"hybridgw": [], "aiperf": []}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(a.keep or scratch)
        for i in range(a.rounds):
            if a.together:
                both = together(url, a, tmp, i)
            else:
                both = {n: one_run(n, url, a, tmp / f"{n}{i}", 1000 + 2 * i + (n == "aiperf")) for n in runs}
            if a.engine_log:  # the engine's spans for this round (its exporter writes every 5 s)
                time.sleep(6)
                engine = engine_spans.engine_requests(a.engine_log())
                both["hybridgw"] |= engine_spans.compare(
                    engine_spans.ours(tmp / f"hybridgw{i}" / "results.json"), engine
                )
                both["aiperf"] |= engine_spans.compare(
                    engine_spans.aiperf(tmp / f"aiperf{i}" / "profile_export.jsonl"), engine
                )
            for name, r in both.items():
                print(
                    json.dumps({"tool": name, "round": i, **{k: round(v, 2) for k, v in r.items()}}),
                    flush=True,
                )
                runs[name].append(r)
    for rs in runs.values():  # each tool's mean against the engine's own over the same run: the clocks agree?
        for r in rs:
            r["ttft_mean/eng"], r["itl_mean/eng"] = (
                r[f"{m}_mean"] / r[f"eng_{m}_mean"] for m in ("ttft", "itl")
            )
    print(f"medians over {a.rounds} rounds (ms; eng_* = the engine's own means over each run)")
    print(f"{'p50':<17} {'hybridgw':>10} {'aiperf':>10} {'ratio':>7}")
    rows = (
        "ttft_mean",
        "itl_mean",
        "req_per_s",
        "eng_ttft_mean",
        "eng_itl_mean",
        "ttft_mean/eng",
        "itl_mean/eng",
        *(
            ("matched", "eng_ttft_p50", "tool_ttft_p50", "ttft_added", "decode_vs_eng")
            if a.engine_log
            else ()
        ),
    )
    for m in (*METRICS, *rows, "eng_prompt_tokens", "tool_cpu_s", "load_avg"):
        x, y = (statistics.median(r[m] for r in runs[n]) for n in ("hybridgw", "aiperf"))
        print(f"{m:<17} {x:>10.2f} {y:>10.2f} {x / y:>7.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running engine (default: start `hybridgw engine --model tiny-random`)")
    p.add_argument(
        "--model", default="tiny-random", help="the engine's model (smollm2, tiny-random), also sent"
    )
    p.add_argument("--engine-threads", type=int, help="the engine's torch threads (default: its own choice)")
    p.add_argument(
        "--engine-budget",
        type=int,
        help="the engine's --max-num-batched-tokens (default: its own, 64 on CPU); >= the prompt makes "
        "a prefill one step, so one tool's prefill stalls the other's stream for one gap, not for many",
    )
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument(
        "--rate",
        type=float,
        help="open loop instead: Poisson arrivals at this many requests/s per tool (no lock-step between "
        "the tools' closed loops under --together)",
    )
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--isl", type=int, default=64)
    p.add_argument("--osl", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--together",
        action="store_true",
        help="run both tools at the same time (each at --concurrency) instead of one after the other",
    )
    p.add_argument(
        "--engine-spans",
        action="store_true",
        help="the engine's own arrival / first token / finish per request (its spans, both tools sending a "
        "traceparent): what the engine did for each tool's requests, and what each tool's clock added",
    )
    p.add_argument("--keep", help="write both tools' results under this folder instead of a temporary one")
    p.add_argument("--pin", action="store_true", help="engine on CPU 0, the tools on CPU 1 (taskset)")
    p.add_argument(
        "--scripted",
        action="store_true",
        help="against tests/fakes/scripted_sse.py instead: fixed "
        "TTFT 200 ms and gaps of 50 ms that no CPU load moves, so only the definitions can differ",
    )
    a = p.parse_args()
    a.tool_prefix = ["taskset", "-c", "1"] if a.pin else []
    a.engine_log = None
    if a.engine_spans and (a.url or a.scripted):
        p.error("--engine-spans needs the engine this script starts (no --url, no --scripted)")
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
        threads = ("--threads", str(a.engine_threads)) if a.engine_threads else ()
        threads += ("--max-num-batched-tokens", str(a.engine_budget)) if a.engine_budget else ()
        with procs.running(
            (["taskset", "-c", "0"] if a.pin else [])
            + procs.hybridgw("engine", "--model", a.model, "--port", str(port), *threads),
            f"{url}/health",
            name="engine",
            env={**os.environ, "HYBRIDGW_TRACES": "console"} if a.engine_spans else None,
            timeout_s=300,
            cwd=ROOT,
        ) as engine:
            a.engine_log = engine.output if a.engine_spans else None
            compare(url, a)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
