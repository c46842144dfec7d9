"""Batch-1 ITL through the engine server, two source trees side by side in one run (interleaved).

Starts `hybridgw engine` (SmolLM2) from this tree (B) and from a git ref of it (A, extracted with
`git archive` to a temp folder), then alternates single streaming greedy requests between them: each
request's inter-chunk gaps as the client sees them, and the engine's own decode step time (its
/v1/engine/state decode rate), so the gap between a step's time and the ITL a client sees shows.

    .venv/bin/python bench/engine_itl_ab.py --a-ref HEAD~1 [--rounds 6] [--new-tokens 96] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import procs

PROMPT = "Write a short story about a lighthouse keeper."


def one_request(url: str, new_tokens: int) -> tuple[list[float], float]:
    """One streamed completion: the client's gaps between content chunks (s), and the engine's step time (s)."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": new_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True}
    stamps: list[float] = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                stamps.append(time.perf_counter())
    rate = httpx.get(f"{url}/v1/engine/state").json()["decode_tokens_per_s"]
    return [b - a for a, b in zip(stamps, stamps[1:])], (1.0 / rate if rate else float("nan"))


def start(stack: ExitStack, tree: Path, threads: int, name: str) -> str:
    port = procs.free_port()
    env = {**os.environ, "PYTHONPATH": str(tree), "HYBRIDGW_WORKERS": "1"}
    cmd = procs.python_module("gateway.cli", "engine", "--model", "smollm2", "--port", str(port),
                              "--threads", str(threads))
    url = f"http://127.0.0.1:{port}"
    stack.enter_context(procs.running(cmd, f"{url}/health", env=env, name=name, timeout_s=600, cwd=tree))
    one_request(url, 8)  # warm-up
    return url


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--a-ref", default="HEAD~1", help="git ref of side A (B is this working tree)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--new-tokens", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        a_tree = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.a_ref], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(a_tree)], input=archive.stdout, check=True)
        urls = {"A": start(stack, a_tree, args.threads, "engine-a"), "B": start(stack, ROOT, args.threads, "engine-b")}
        gaps: dict[str, list[float]] = {"A": [], "B": []}
        steps: dict[str, list[float]] = {"A": [], "B": []}
        load = os.getloadavg()
        for r in range(args.rounds):
            for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                g, s = one_request(urls[side], args.new_tokens)
                gaps[side].extend(g)
                steps[side].append(s)
        load_after = os.getloadavg()
    med = {k: statistics.median(v) * 1e3 for k, v in gaps.items()}
    step = {k: statistics.median(v) * 1e3 for k, v in steps.items()}
    for side in ("A", "B"):
        print(json.dumps({"side": side, "ref": args.a_ref if side == "A" else "worktree",
                          "itl_p50_ms": round(med[side], 2), "engine_step_ms": round(step[side], 2),
                          "gap_ms": round(med[side] - step[side], 2), "gaps": len(gaps[side])}))
    print(json.dumps({"itl_ratio_b_over_a": round(med["B"] / med["A"], 3),
                      "load_before": [round(x, 2) for x in load], "load_after": [round(x, 2) for x in load_after]}))


if __name__ == "__main__":
    main()
