"""A mixed step's cost, one forward pass vs two (decodes, then the prompt chunk), on the same step.

In-process: S streams decode while a long prompt is prefilled; at a few of the prompt's contexts the
scheduler's mixed step is computed --reps times each way, alternately (the runner recomputes the
same K/V into the same slots, so a repeat is the same work), then applied once and the prefill goes
on. CPU seconds per step (what a step costs whatever else the shared machine runs) and wall seconds
(what a running stream waits, with 2 threads), medians.

    .venv/bin/python bench/engine_mixed_pass.py [--threads 1] [--streams 8] [--reps 5] [--profile]

--profile adds torch.profiler's top operators (their wall time) of the one-pass step at each context.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from local_engine.cli import passive_openmp_waits  # noqa: E402

passive_openmp_waits()  # as the engine's CLI does, before torch loads
import torch  # noqa: E402

from local_engine.config import EngineConfig  # noqa: E402
from local_engine.engine_build import build_engine, load  # noqa: E402
from local_engine.sequence import SamplingParams, Sequence, SequenceStatus  # noqa: E402


def timed(engine, batch, split: bool) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(CPU s, wall s) of the step computed one way."""
    engine.runner.split_mixed = split
    engine.runner.mirror.invalidate()  # both ways gather the decodes' K/V afresh (a repeat is not a next step)
    cpu, wall = time.process_time(), time.perf_counter()
    engine.runner.run(batch)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=3811)
    p.add_argument("--contexts", default="0,1024,2048,3584", help="prompt contexts at which to time a step")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", default="{}", help="EngineConfig fields as JSON")
    p.add_argument("--profile", action="store_true", help="top operators of the one-pass step")
    args = p.parse_args()
    config = EngineConfig(model=args.model, cpu_threads=args.threads, **json.loads(args.config))
    loaded = load(config)
    engine = build_engine(config, loaded)
    greedy = SamplingParams(max_tokens=4000, temperature=0.0, ignore_eos=True)
    for i in range(args.streams):
        engine.add_request(Sequence(loaded.tokenizer.encode(f"Tell a long story, number {i}."), greedy))
    for _ in range(10):
        engine.step()
    long = Sequence([(i * 7919) % 40_000 + 100 for i in range(args.prompt_tokens)],
                    SamplingParams(max_tokens=1, temperature=0.0))
    engine.add_request(long)
    targets = sorted(int(c) for c in args.contexts.split(","))
    rows = []
    while targets and long.status is not SequenceStatus.FINISHED:
        batch = engine.scheduler.schedule()
        assert batch is not None
        context = long.num_cached_tokens
        if context >= targets[0] and 0 < batch.num_decodes < batch.num_seqs:
            targets.pop(0)
            times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for _ in range(args.reps):
                for split in (True, False):
                    times[split].append(timed(engine, batch, split))
            two, one = (statistics.median(c for c, _ in times[s]) for s in (True, False))
            two_wall, one_wall = (statistics.median(w for _, w in times[s]) for s in (True, False))
            rows.append({"context": context, "decodes": batch.num_decodes, "chunk": batch.num_prefill_tokens,
                         "two_pass_cpu_s": round(two, 4), "one_pass_cpu_s": round(one, 4),
                         "one/two": round(one / two, 3), "two_pass_wall_s": round(two_wall, 4),
                         "one_pass_wall_s": round(one_wall, 4), "one/two_wall": round(one_wall / two_wall, 3)})
            print(json.dumps(rows[-1]), flush=True)
            if args.profile:
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    timed(engine, batch, False)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8), flush=True)
        engine.runner.split_mixed = False
        engine._postprocess(batch, engine.runner.run(batch))
    print(json.dumps({"threads": args.threads, "streams": args.streams, "reps": args.reps,
                      "median_one/two": round(statistics.median(r["one/two"] for r in rows), 3),
                      "median_one/two_wall": round(statistics.median(r["one/two_wall"] for r in rows), 3),
                      "load": round(os.getloadavg()[0], 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
