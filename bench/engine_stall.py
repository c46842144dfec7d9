"""Does a long prompt stall the streams already running? The longest inter-token gap, before vs during.

Starts `hybridgw engine` (SmolLM2 by default), lets S streams decode for a few seconds, then sends
one long prompt (~N tokens, one output token) and keeps the streams going until it is answered.
Reports each phase's longest inter-token gap and ITL p50 over the running streams, and the long
prompt's time to first token and prefill rate (prompt tokens / TTFT).

    .venv/bin/python bench/engine_stall.py [--streams 8] [--prompt-tokens 4000] [--engine-arg=--max-num-batched-tokens=128]

Late chunks of a long prompt can be made smaller with --engine-arg=--context-cost-tokens=K (and a larger
budget to keep the step count); bench/engine_stall_steps.py shows the per-step cost in-process.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from observability.bench.client import Client, Sent, Target
from observability.bench.metrics import percentile
from observability.bench.records import RequestRecord
from tests.support import procs

_FILLER = "The lighthouse keeper counted the waves, wrote the weather in his log and trimmed the lamp. "


async def stream(client: Client, model: str, times: list[float]) -> None:
    """One stream that decodes until cancelled; appends the arrival time of each content chunk (on
    time.perf_counter's clock, as `hybridgw bench`'s client reads them: role-only chunks excluded)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Tell a long story."}],
                       "max_tokens": 4000, "temperature": 0, "ignore_eos": True, "stream": True}).encode()
    record = await client.send(Sent(body, None, RequestRecord(0, "stream", "-", 0, 4000, 0.0, 0.0)), 0.0,
                               times.append)
    if record.error:  # ended before it was cancelled: the gaps after it would be missing
        raise RuntimeError(f"stream failed: {record.error}: {record.error_detail}")


def pct(sorted_values: list[float], q: float) -> float:
    return percentile(sorted_values, q) if sorted_values else float("nan")


async def long_prompt(url: str, model: str, prompt_tokens: int) -> tuple[float, int]:
    """Send the long prompt; (seconds to its answer, its prompt tokens)."""
    text = _FILLER * (prompt_tokens // 19)  # ~19 SmolLM2 tokens per filler sentence
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        r = await client.post(f"{url}/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 1, "temperature": 0})
        elapsed = time.perf_counter() - start
    r.raise_for_status()
    return elapsed, r.json()["usage"]["prompt_tokens"]


def gaps(times: list[list[float]], lo: float, hi: float) -> list[float]:
    """Inter-token gaps of every stream that overlap [lo, hi] (a stall spans the whole window)."""
    return sorted(b - a for ts in times for a, b in itertools.pairwise(ts) if b >= lo and a <= hi)


def worst(times: list[list[float]], lo: float, hi: float) -> str:
    """The 5 longest gaps while the prompt was prefilled, each as gap@where (0: sent .. 1: answered)."""
    found = sorted(((b - a, (b - lo) / (hi - lo)) for ts in times for a, b in itertools.pairwise(ts)
                    if b >= lo and a <= hi), reverse=True)
    return " ".join(f"{g:.2f}s@{w:.2f}" for g, w in found[:5])


async def run(url: str, model: str, args: argparse.Namespace) -> dict[str, float]:
    client = Client(Target.parse(url, "chat"), {}, idle_timeout_s=600)
    times: list[list[float]] = [[] for _ in range(args.streams)]
    tasks = [asyncio.create_task(stream(client, model, t)) for t in times]
    await asyncio.sleep(args.warmup_s)
    sent = time.perf_counter()
    ttft, n = await long_prompt(url, model, args.prompt_tokens)
    answered = time.perf_counter()
    deadline = answered + 30
    while not all(ts and ts[-1] > answered for ts in times) and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)  # each stream's first token after the prompt closes its gap
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    client.close()
    before, during = gaps(times, sent - args.warmup_s / 2, sent - 0.01), gaps(times, sent, answered)
    return {"streams": args.streams, "prompt_tokens": n, "long_prompt_ttft_s": ttft, "prefill_tok_per_s": n / ttft,
            "max_gap_before_s": before[-1] if before else float("nan"), "itl_p50_before_s": pct(before, 50),
            "max_gap_during_s": during[-1] if during else float("nan"), "itl_p50_during_s": pct(during, 50),
            "itl_p90_during_s": pct(during, 90), "itl_p99_during_s": pct(during, 99),
            "worst_gaps_at": worst(times, sent, answered),
            "stream_tokens_during": len(during)}


def served_model(url: str) -> str:
    return str(httpx.get(f"{url}/v1/models").json()["data"][0]["id"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=4000)
    p.add_argument("--warmup-s", type=float, default=4.0, help="seconds the streams decode before the prompt")
    p.add_argument("--engine-arg", action="append", default=[], help="extra `hybridgw engine` argument")
    p.add_argument("--url", default=None, help="measure a running engine at this URL instead of starting one")
    args = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared: compare only side by side)")
    if args.url:
        result = asyncio.run(run(args.url, served_model(args.url), args))
    else:
        port = procs.free_port()
        cmd = procs.python_module("gateway.cli", "engine", "--model", args.model, "--port", str(port),
                                  *args.engine_arg)
        url = f"http://127.0.0.1:{port}"
        with procs.running(cmd, f"{url}/health", name="bench-stall", timeout_s=600):
            result = asyncio.run(run(url, served_model(url), args))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
