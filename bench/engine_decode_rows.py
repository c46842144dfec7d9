"""Decode steps of many rows, A/B in one process, steps interleaved: the runner as loaded (B) against the same
runner with some attributes changed (A), e.g. the native decode attention capped at 3 sequences (the earlier limit).

Loads SmolLM2 as `hybridgw engine` does (2 threads, steps of <= 16 tokens on 1), prefills --batch sequences of
--isl random tokens each, then runs decode steps in blocks alternating A, B, B, A ... (each block's first step
untimed: the decode mirror of the bmm path is rebuilt there, as after a join); p50 wall and process CPU per step
per side and batch, their ratio B / A and the load average (outputs: the unit tests).

    .venv/bin/python bench/engine_decode_rows.py [--batch 16 64] [--isl 128] [--steps 24] \
        [--a-runner '{"native_decode_max_seqs": 3}']
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local_engine.cli import passive_openmp_waits

passive_openmp_waits()  # as `hybridgw engine` runs (before torch loads libgomp)

from local_engine.config import EngineConfig  # noqa: E402
from local_engine.engine_build import load  # noqa: E402
from local_engine.runner import ModelRunner  # noqa: E402
from local_engine.sequence import SamplingParams, Sequence  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from engine_decode import run_steps  # noqa: E402


def side_runs(runner: ModelRunner, batch: int, args: argparse.Namespace, a_attrs: dict) -> dict:
    rng = random.Random(batch)
    vocab = runner.model_config.vocab_size
    seqs = [Sequence([rng.randrange(100, vocab) for _ in range(args.isl)],
                     SamplingParams(max_tokens=10 ** 6, temperature=0.0, ignore_eos=True)) for _ in range(batch)]
    free = list(range(runner.num_blocks - 1, 0, -1))
    b_attrs = {k: getattr(runner, k) for k in a_attrs}
    run_steps(runner, seqs, [args.isl] * batch, True, free)
    times: dict[str, dict[str, list[float]]] = {s: {"wall": [], "cpu": []} for s in "AB"}
    for i in range(2 * args.steps // args.block * (args.block + 1)):
        j = i // (args.block + 1)  # blocks of steps alternate A B B A ...; each block's first step is not timed:
        side = "AB"[j % 2] if (j // 2) % 2 == 0 else "BA"[j % 2]  # it rebuilds what the other side dropped
        for k, v in (a_attrs if side == "A" else b_attrs).items():
            setattr(runner, k, v)
        t, c = time.perf_counter(), time.process_time()
        run_steps(runner, seqs, [1] * batch, False, free)
        if i % (args.block + 1):
            times[side]["wall"].append(time.perf_counter() - t)
            times[side]["cpu"].append(time.process_time() - c)
    for k, v in b_attrs.items():
        setattr(runner, k, v)
    med = {s: {k: round(statistics.median(v) * 1e3, 1) for k, v in times[s].items()} for s in "AB"}
    return {"batch": batch, "A_ms": med["A"], "B_ms": med["B"], "B_over_A_wall": round(med["B"]["wall"] / med["A"]["wall"], 3),
            "B_over_A_cpu": round(med["B"]["cpu"] / med["A"]["cpu"], 3)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2")
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    p.add_argument("--isl", type=int, default=128)
    p.add_argument("--steps", type=int, default=24, help="decode steps per side and batch")
    p.add_argument("--block", type=int, default=4, help="timed steps a side runs in a row (the decode mirror "
                   "is kept within a block)")
    p.add_argument("--a-runner", default='{"native_decode_max_seqs": 3}', help="side A's ModelRunner attributes")
    args = p.parse_args()
    runner = load(EngineConfig(model=args.model)).runner
    for batch in args.batch:
        load_before = os.getloadavg()[0]
        row = side_runs(runner, batch, args, json.loads(args.a_runner))
        print(json.dumps({**row, "a_runner": args.a_runner, "load": [round(load_before, 2),
                                                                    round(os.getloadavg()[0], 2)]}))


if __name__ == "__main__":
    main()
