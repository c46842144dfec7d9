"""What is around the model in one batch-1 decode step, A/B in one process, steps interleaved.

Builds the LLMEngine as `hybridgw engine` does (SmolLM2, greedy, one stream) and alternates engine
steps between the old path (A: the runner builds AttentionMetadata on native decode steps; the sampler's
chunked argmax at one row) and the current one (B). Reports per side the p50 wall and thread-CPU time of
engine.step(), of runner.run() inside it, and of the model call alone (wall and CPU), so what lies outside the model shows.

    .venv/bin/python bench/engine_step_overhead.py [--steps 300] [--context 0] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local_engine.cli import passive_openmp_waits

passive_openmp_waits()  # as `hybridgw engine` runs (before torch loads libgomp)

import torch

import local_engine.sampler as sampler_module
from local_engine.config import EngineConfig
from local_engine.engine_build import build_engine, load
from local_engine.sequence import SamplingParams, Sequence

PROMPT = "Write a short story about a lighthouse keeper."


def chunked_argmax(logits: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """The sampler's argmax before the one-row shortcut (side A)."""
    S, V = logits.shape
    chunks = logits.view(S, V // chunk, chunk)
    best = chunks.amax(dim=-1).argmax(dim=-1)
    return best * chunk + chunks[torch.arange(S), best].argmax(dim=-1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--context", type=int, default=0, help="prompt tokens (0: the short chat prompt)")
    p.add_argument("--threads", type=int, default=None, help="engine --threads (default: the engine's)")
    args = p.parse_args()
    config = EngineConfig(model="smollm2", cpu_threads=args.threads)
    loaded = load(config)
    engine, runner = build_engine(config, loaded), loaded.runner
    ids = loaded.tokenizer.encode(PROMPT)
    ids = (ids * (args.context // len(ids) + 1))[:args.context] if args.context else ids
    engine.add_request(Sequence(list(ids), SamplingParams(max_tokens=2 * args.steps + 50, temperature=0.0,
                                                          ignore_eos=True)))
    lean, argmax = runner._native_decode, sampler_module._argmax
    times: dict[str, dict[str, list[float]]] = {s: {"step": [], "step_cpu": [], "run": [], "model": [], "model_cpu": []} for s in "AB"}
    run, model_call = runner.run, runner.model.forward
    clock: dict[str, float] = {}

    def timed_run(batch):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = run(batch)
        clock["run"] = time.perf_counter() - t
        return out

    def timed_model(*a, **k):  # type: ignore[no-untyped-def]
        t, c = time.perf_counter(), time.thread_time()
        out = model_call(*a, **k)
        clock["model"], clock["model_cpu"] = time.perf_counter() - t, time.thread_time() - c
        return out

    runner.run, runner.model.forward = timed_run, timed_model
    for _ in range(10):
        engine.step()
    load_before = os.getloadavg()
    for i in range(args.steps):
        side = "AB"[i % 2] if (i // 2) % 2 == 0 else "BA"[i % 2]
        runner._native_decode = (lambda batch: None) if side == "A" else lean
        sampler_module._argmax = chunked_argmax if side == "A" else argmax
        t, c = time.perf_counter(), time.thread_time()
        engine.step()
        row = times[side]
        row["step"].append(time.perf_counter() - t)
        row["step_cpu"].append(time.thread_time() - c)
        row["run"].append(clock["run"])
        row["model"].append(clock["model"])
        row["model_cpu"].append(clock["model_cpu"])
    for side in "AB":
        med = {k: round(statistics.median(v) * 1e3, 3) for k, v in times[side].items()}
        med["outside_model_ms"] = round(med["step"] - med["model"], 3)
        med["outside_model_cpu_ms"] = round(statistics.median(
            [a - b for a, b in zip(times[side]["step_cpu"], times[side]["model_cpu"])]) * 1e3, 3)
        print(json.dumps({"side": side, "context": len(ids), "threads": torch.get_num_threads(), **med}))
    print(json.dumps({"load_before": [round(x, 2) for x in load_before],
                      "load_after": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
