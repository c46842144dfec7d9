"""Local engine server throughput: C concurrent streaming chat requests vs transformers' batch-C generate.

Starts `hybridgw engine` (SmolLM2 by default) on a free port, fires C streaming requests of N
forced tokens each (ignore_eos) over C keep-alive connections (`hybridgw bench`'s raw asyncio client,
runner and metrics), and reports aggregate generated tokens/s, TTFT (first content chunk) and
ITL p50/p95. Then stops the engine and runs ../shared/peers/hf_generate.sh at batch C on the
same GGUF in the same run, and prints the ratio.

    .venv/bin/python bench/engine_server.py [--concurrency 64] [--new-tokens 64] [--rounds 2]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from observability.bench.arrivals import ClosedLoop
from observability.bench.client import Client, Sent, Target
from observability.bench.metrics import summarize
from observability.bench.records import RequestRecord
from observability.bench.runner import RunSpec, Sink, run
from tests.support import procs

# The project's sibling ../shared/peers, never an absolute path; HYBRIDGW_PEERS points elsewhere.
PEER = Path(os.environ.get("HYBRIDGW_PEERS", ROOT.parent / "shared" / "peers")) / "hf_generate.sh"
PROMPT = "Write a short story about a lighthouse keeper."  # the peer script's default prompt


def request(model: str, new_tokens: int) -> Sent:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}],
                       "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    return Sent(body, None, RequestRecord(0, "engine", "bench", 39, new_tokens, 0.0, 0.0))


async def run_round(pool: Client, concurrency: int, one: Sent) -> dict[str, float]:
    """C requests at once; TTFT / ITL / tokens/s with `hybridgw bench`'s definitions (first content chunk)."""
    sink = Sink()
    await run(pool, [], [one] * concurrency, RunSpec(ClosedLoop(concurrency)), sink)
    summary = summarize(sink.records)
    if summary.errors or summary.ttft is None or summary.itl is None:
        first = next((r for r in sink.records if r.error), None)
        raise SystemExit(f"failed requests {summary.errors}: {first.error_detail if first else 'no content'}")
    return {"wall_s": summary.duration_s, "tokens": summary.output_tokens,
            "tokens_per_s": summary.output_token_throughput,
            "ttft_p50_s": summary.ttft.p50, "ttft_p95_s": summary.ttft.p95,
            "itl_p50_s": summary.itl.p50, "itl_p95_s": summary.itl.p95}


async def run_rounds(url: str, model: str, args: argparse.Namespace) -> list[dict[str, float]]:
    """A warm-up round opens the keep-alive connections (as long-lived clients hold them), then the rounds."""
    pool = Client(Target.parse(url, "chat"), {}, idle_timeout_s=600)
    try:
        await run_round(pool, args.concurrency, request(model, 4))
        one = request(model, args.new_tokens)
        return [await run_round(pool, args.concurrency, one) for _ in range(args.rounds)]
    finally:
        pool.close()


def measure(url: str, args: argparse.Namespace) -> tuple[list[dict[str, float]], dict]:
    model = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
    rounds = asyncio.run(run_rounds(url, model, args))
    return rounds, httpx.get(f"{url}/v1/engine/state").json()


def bench_engine(args: argparse.Namespace) -> list[dict[str, float]]:
    if args.url:
        rounds, state = measure(args.url, args)
        report(rounds, state)
        return rounds
    port = procs.free_port()
    cmd = procs.python_module("gateway.cli", "engine", "--model", args.model, "--port", str(port),
                              "--max-num-seqs", str(max(args.concurrency, 1)),
                              *(["--threads", str(args.threads)] if args.threads else []), *args.engine_arg)
    url = f"http://127.0.0.1:{port}"
    with procs.running(cmd, f"{url}/health", name="bench-engine", timeout_s=600):
        rounds, state = measure(url, args)
    report(rounds, state)
    return rounds


def report(rounds: list[dict[str, float]], state: dict) -> None:
    for r in rounds:
        print(json.dumps({"engine": "hybridgw", **{k: round(v, 4) for k, v in r.items()}}), flush=True)
    print(json.dumps({"engine_state": {k: state[k] for k in ("model", "device", "kv_dtype", "num_preemptions",
                                                              "decode_tokens_per_s", "prefill_tokens_per_s",
                                                              "prefix_cache_hit_rate")}}))


def bench_peer(gguf: str, concurrency: int, new_tokens: int) -> float | None:
    cmd = [str(PEER), gguf, "--batch", str(concurrency), "--dtype", "bf16", "--new-tokens", str(new_tokens)]
    print("peer:", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        print(f"peer failed ({out.returncode}): {out.stderr[-2000:]}", file=sys.stderr)
        return None
    print(lines[-1], flush=True)
    return float(json.loads(lines[-1])["tokens_per_s"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="engine torch threads (default: the engine's)")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--peer-runs", type=int, default=2, help="peer runs; its best one is compared")
    p.add_argument("--engine-arg", action="append", default=[], help="extra `hybridgw engine` argument")
    p.add_argument("--url", default=None, help="measure a running engine at this URL instead of starting one")
    args = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared: compare only side by side)")
    rounds = bench_engine(args)
    ours = statistics.median(r["tokens_per_s"] for r in rounds)
    print(f"hybridgw engine: median {ours:.1f} generated tok/s over {len(rounds)} rounds", flush=True)
    if args.no_peer or args.model != "smollm2":
        return 0
    from local_engine.loaders.registry import smollm2_gguf_path

    # The peer's best of several runs: a stall on this shared machine must not flatter the ratio.
    runs = [bench_peer(str(smollm2_gguf_path()), args.concurrency, args.new_tokens) for _ in range(args.peer_runs)]
    peer = max((r for r in runs if r), default=None)
    if peer:
        print(f"ratio hybridgw (median) / transformers generate (best of {args.peer_runs}), batch "
              f"{args.concurrency}: {ours:.1f} / {peer:.1f} = {ours / peer:.2f}x")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
