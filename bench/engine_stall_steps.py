"""The engine's steps while a long prompt arrives beside S decoding streams, in-process, timed in CPU seconds.

CPU time per step is what a step costs whatever else the (shared) machine runs, so it shows how the
step — the running streams' gap — grows with the prompt's context, and what the whole prefill costs.
Prints per step (chunk tokens @ context: CPU s) and: steps, step CPU and wall p50 / max, prefill CPU / wall s.

    .venv/bin/python bench/engine_stall_steps.py [--threads 1] [--config '{"context_cost_tokens": 0}'] [--by-pass]

--by-pass runs each mixed step as two passes (decodes, then the chunk: HYBRIDGW_MIXED_PASS=split, the way
before one-pass mixed steps) and reports each pass's CPU time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from local_engine.cli import passive_openmp_waits  # noqa: E402

passive_openmp_waits()  # as the engine's CLI does, before torch loads
from local_engine.config import EngineConfig  # noqa: E402
from local_engine.engine_build import build_engine, load  # noqa: E402
from local_engine.sequence import SamplingParams, Sequence, SequenceStatus  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=3811)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is the work itself)")
    p.add_argument("--config", default="{}", help="EngineConfig fields as JSON, e.g. the context cost")
    p.add_argument("--by-pass", action="store_true", help="two passes per mixed step, each timed")
    args = p.parse_args()
    config = EngineConfig(model=args.model, cpu_threads=args.threads, **json.loads(args.config))
    loaded = load(config)
    engine = build_engine(config, loaded)
    passes: list[tuple[bool, float]] = []  # (decode pass?, CPU s) with --by-pass
    if args.by_pass:
        engine.runner.split_mixed = True
        run_pass = engine.runner._run

        def timed_pass(batch):  # type: ignore[no-untyped-def]
            start = time.process_time()
            out = run_pass(batch)
            passes.append((batch.is_decode, time.process_time() - start))
            return out
        engine.runner._run = timed_pass
    greedy = SamplingParams(max_tokens=2000, temperature=0.0, ignore_eos=True)
    for i in range(args.streams):
        engine.add_request(Sequence(loaded.tokenizer.encode(f"Tell a long story, number {i}."), greedy))
    for _ in range(10):  # the streams are decoding
        engine.step()
    long = Sequence([(i * 7919) % 40_000 + 100 for i in range(args.prompt_tokens)],
                    SamplingParams(max_tokens=1, temperature=0.0))
    engine.add_request(long)
    passes.clear()
    rows, walls = [], []
    while long.status is not SequenceStatus.FINISHED:
        context = long.num_cached_tokens
        start, wall = time.process_time(), time.perf_counter()
        engine.step()
        rows.append((long.num_cached_tokens - context, context, time.process_time() - start))
        walls.append(time.perf_counter() - wall)
    costs = sorted(cpu for _, _, cpu in rows)
    print(" ".join(f"{n}@{c}:{cpu:.2f}" for n, c, cpu in rows))
    by_pass = {}
    if passes:
        decode = sorted(cpu for is_decode, cpu in passes if is_decode)
        chunk = [cpu for is_decode, cpu in passes if not is_decode]
        by_pass = {"decode_pass_cpu_p50_s": round(decode[len(decode) // 2], 3), "decode_pass_cpu_s": round(sum(decode), 2),
                   "chunk_pass_cpu_first_s": round(chunk[0], 3), "chunk_pass_cpu_max_s": round(max(chunk), 3)}
    print(json.dumps({"config": json.loads(args.config), "threads": args.threads, **by_pass, "steps": len(rows),
                      "step_cpu_p50_s": round(costs[len(costs) // 2], 3), "step_cpu_max_s": round(costs[-1], 3),
                      "prefill_cpu_s": round(sum(costs), 2),
                      "step_wall_p50_s": round(sorted(walls)[len(walls) // 2], 3), "step_wall_max_s": round(max(walls), 3),
                      "prefill_wall_s": round(sum(walls), 2), "load": round(os.getloadavg()[0], 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
