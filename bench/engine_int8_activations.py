"""8-bit vs bf16 activations in the native 4-bit matmuls (#14): decode step time and quality, one process.

One model, its kernels switched between "bf16" and "int8" activations (the same weights):
  speed: batch-B decode steps, settings alternating each round; p50 wall / CPU ms per step. "bf16", "int8":
  calls of >= 4 M multiply-adds split over OpenMP (the earlier default, HYBRIDGW_NATIVE_SPLIT_WORK=0);
  --split adds "bf16+split", "int8+split": calls of >= 256 K (every layer matmul) over the kernels' spinning
  pool (the default now).
  quality: per prompt at batch 1 (the native decode path), the bf16-activation greedy text is the reference;
  int8 is teacher-forced along it (agree: argmax = the reference token; |dlp|: mean |log p difference| of the
  reference tokens; max) and free-run (the common prefix). --fp32 adds both against an fp32 model's text,
  --switch both against the same prompts run as one batch of 8 (the bf16 weights' side of the int4 switch).

    .venv/bin/python bench/engine_int8_activations.py [--model smollm2] [--threads 2] [--rounds 6] [--tokens 32]
"""
from __future__ import annotations

import argparse
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

from bench.engine_decode import PROMPT, run_steps
from bench.kv_fp8_quality import PROMPTS, run_text
from local_engine.loading import LoadedModel, load_engine_model
from local_engine.native.kernels import DEFAULT_SPLIT_WORK
from local_engine.runner_threads import SMALL_STEP_TOKENS, StepThreads
from local_engine.sequence import SamplingParams, Sequence

SETTINGS = ("bf16", "int8")


def speed(loaded: LoadedModel, args: argparse.Namespace) -> None:
    runner, tok = loaded.runner, loaded.tokenizer
    kernels = runner.model.native
    assert kernels is not None, "the native kernels are off or unavailable"
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPT}]))
    if args.prompt_tokens:
        prompt = (prompt * (args.prompt_tokens // len(prompt) + 1))[:args.prompt_tokens]
    runner.step_threads = StepThreads(args.threads, args.threads, SMALL_STEP_TOKENS)
    kernels.threads = args.threads
    settings = (*SETTINGS, "bf16+split", "int8+split") if args.split else SETTINGS
    times: dict[str, list[tuple[float, float]]] = {s: [] for s in settings}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for setting in settings:
            act, _, split = setting.partition("+")
            kernels.set_activations(act)
            if split:
                kernels.set_threading(use_openmp=False, min_work=DEFAULT_SPLIT_WORK)
            else:
                kernels.set_threading(use_openmp=True)
            free = list(range(runner.num_blocks))
            seqs = [Sequence(list(prompt), SamplingParams(max_tokens=args.new_tokens, temperature=0.0,
                                                          ignore_eos=True)) for _ in range(args.batch)]
            run_steps(runner, seqs, [len(prompt)] * args.batch, True, free)
            for _ in range(args.new_tokens - 1):
                t0, c0 = time.perf_counter(), time.process_time()
                run_steps(runner, seqs, [1] * args.batch, False, free)
                times[setting].append((time.perf_counter() - t0, time.process_time() - c0))
        load.append(os.getloadavg()[0])
    print(f"load average (1 min) per round: {' '.join(f'{x:.2f}' for x in load)}")
    print("| activations | batch | threads | step wall p50 ms | step CPU p50 ms | tok/s (1 / wall p50 x batch) | steps |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = statistics.median(w for w, _ in times["bf16"])
    for setting in settings:
        wall, cpu = zip(*times[setting])
        w = statistics.median(wall)
        print(f"| {setting} | {args.batch} | {args.threads} | {w * 1e3:.2f} ({w / base:.2f}x) "
              f"| {statistics.median(cpu) * 1e3:.2f} | {args.batch / w:.1f} | {len(wall)} |", flush=True)


def one_by_one(loaded: LoadedModel, prompts: list[list[int]], n: int,
               forced: list[list[int]] | None) -> tuple[list[list[int]], torch.Tensor]:
    """run_text per prompt (batch 1: the decode steps take the native kernels)."""
    outs = [run_text(loaded.runner, [p], n, None if forced is None else [forced[i]]) for i, p in enumerate(prompts)]
    return [o[0][0] for o in outs], torch.cat([o[1] for o in outs])


def quality_row(label: str, ref: tuple[list[list[int]], torch.Tensor], loaded: LoadedModel,
                prompts: list[list[int]], n: int) -> None:
    ref_tokens, ref_lp = ref
    _, lp = one_by_one(loaded, prompts, n, ref_tokens)
    idx = torch.tensor(ref_tokens)[:, :, None]
    dlp = (lp.gather(2, idx) - ref_lp.gather(2, idx)).abs()
    agree = (lp.argmax(-1) == idx[..., 0]).float().mean()
    free, _ = one_by_one(loaded, prompts, n, None)
    prefix = [next((i for i, (a, b) in enumerate(zip(f, r)) if a != b), n) for f, r in zip(free, ref_tokens)]
    print(f"| {label} | {float(agree):.3f} | {float(dlp.mean()):.4f} | {float(dlp.max()):.3f} "
          f"| {statistics.mean(prefix):.1f} |", flush=True)


def quality(loaded: LoadedModel, args: argparse.Namespace) -> None:
    kernels = loaded.runner.model.native
    assert kernels is not None
    tok = loaded.tokenizer
    prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}])) for q in PROMPTS]
    print(f"| reference -> candidate | agree | mean abs dlogprob | max | free-run prefix (of {args.tokens}) |")
    print("|---|---:|---:|---:|---:|")
    kernels.set_activations("bf16")
    ref = one_by_one(loaded, prompts, args.tokens, None)
    kernels.set_activations("int8")
    quality_row("bf16 act -> int8 act", ref, loaded, prompts, args.tokens)
    if args.switch:  # batch dependence: all prompts as one batch of 8 rows take the bf16 weights (oneDNN)
        together = run_text(loaded.runner, prompts, args.tokens, forced=None)
        for setting in SETTINGS:
            kernels.set_activations(setting)
            quality_row(f"batch 8 (bf16 weights) -> batch 1, {setting} act", together, loaded, prompts, args.tokens)
    if args.fp32:
        fp32 = load_engine_model(args.model, dtype="fp32", kv_cache_bytes=64 << 20)
        ref32 = one_by_one(fp32, prompts, args.tokens, None)
        for setting in SETTINGS:
            kernels.set_activations(setting)
            quality_row(f"fp32 model -> bf16 model, {setting} act", ref32, loaded, prompts, args.tokens)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--new-tokens", type=int, default=32, help="decode steps per round and setting (+1)")
    p.add_argument("--prompt-tokens", type=int, default=0)
    p.add_argument("--tokens", type=int, default=32, help="quality: tokens per prompt")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--split", action="store_true", help="speed: also int8 with every layer matmul split")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument("--fp32", action="store_true", help="quality: also both against an fp32 model")
    p.add_argument("--switch", action="store_true", help="quality: also both against the batch-8 path")
    args = p.parse_args()
    loaded = load_engine_model(args.model, kv_cache_bytes=256 << 20, activations="bf16")
    with torch.inference_mode():
        if not args.no_speed:
            speed(loaded, args)
        if not args.no_quality:
            quality(loaded, args)


if __name__ == "__main__":
    main()
