"""Batch-1 decode steps of whatever tree this runs from, loaded as `hybridgw engine` loads (2 threads
here): for A/B of two commits, run it alternately from each tree (e.g. a `git archive` of the old one).

Prints one line: step wall and CPU p50, the load, and a short hash of the greedy tokens (equal hashes:
same tokens). Trees with local_engine/runner_threads.py get the engine's small-step switch (2:1).

    git archive OLD_COMMIT | tar -x -C /tmp/old
    for t in /tmp/old $PWD; do
        (cd $t && PYTHONPATH=$t "$OLDPWD/.venv/bin/python" "$OLDPWD/bench/engine_decode_trees.py"); done
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "bench"))

from local_engine.cli import passive_openmp_waits

passive_openmp_waits()

import torch
from engine_decode import PROMPT, run_steps

from local_engine.loading import load_engine_model
from local_engine.sequence import SamplingParams, Sequence


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=63)
    args = p.parse_args()
    loaded = load_engine_model("smollm2", kv_cache_bytes=256 << 20, num_threads=args.threads,
                               shares_process_with_server=False)
    runner, label = loaded.runner, f"{args.threads} threads"
    try:
        from local_engine.runner_threads import StepThreads
        runner.step_threads = StepThreads(args.threads, 1)
        label += ", small steps on 1"
    except ImportError:
        pass
    tok = loaded.tokenizer
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPT}]))
    wall, cpu, tokens = [], [], []
    with torch.inference_mode():
        for _ in range(args.rounds):
            free = list(range(runner.num_blocks))
            seq = Sequence(list(ids), SamplingParams(max_tokens=args.steps + 1, temperature=0.0, ignore_eos=True))
            run_steps(runner, [seq], [len(ids)], True, free)
            for _ in range(args.steps):
                t0, c0 = time.perf_counter(), time.process_time()
                run_steps(runner, [seq], [1], False, free)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            tokens.append(seq.completion_token_ids)
    digest = hashlib.sha256(repr(tokens).encode()).hexdigest()[:8]
    print(f"{os.getcwd()} ({label}): step wall p50 {statistics.median(wall) * 1e3:.1f} ms, CPU p50 "
          f"{statistics.median(cpu) * 1e3:.1f} ms, {len(wall)} steps, load {os.getloadavg()[0]:.1f}, tokens {digest}")


if __name__ == "__main__":
    main()
