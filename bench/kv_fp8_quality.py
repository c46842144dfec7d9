"""FP8 KV quality against full-precision KV, with and without per-head scales, on a fixed prompt set.

For each reference (model dtype = KV dtype: bf16, fp32) the reference greedily generates N tokens per
prompt; each candidate KV dtype on the same weights is then teacher-forced along that text (prefill,
then one decode step per reference token, so every K/V it reads went through its pool) and free-run:
  agree    share of positions where the candidate's argmax is the reference's token (teacher-forced)
  |dlp|    mean |log p_cand(tok) - log p_ref(tok)| over the reference's tokens
  max|dlp| the largest of those; prefix: mean common prefix of the free-run greedy outputs (of N)

    .venv/bin/python bench/kv_fp8_quality.py [--model smollm2 tiny-random] [--tokens 32] [--device cpu]
    .venv/bin/python bench/kv_fp8_quality.py --speed [--batch 8 --context 192]  # decode step time per KV dtype
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from local_engine.batch import ScheduledBatch
from local_engine.kv_cache import num_blocks_for_budget, resolve_kv_dtype
from local_engine.loading import DEFAULT_CPU_KV_BYTES, LoadedModel, load_engine_model
from local_engine.runner import ModelRunner
from local_engine.sequence import SamplingParams, Sequence

PROMPTS = (
    "What is the capital of France?",
    "Write a short story about a lighthouse keeper.",
    "Explain why the sky is blue in two sentences.",
    "Give three tips for learning a new language.",
    "Write a Python function that reverses a string.",
    "What are the main causes of inflation?",
    "Translate 'good morning, how are you?' into Spanish and German.",
    "List the planets of the solar system in order.",
)
# (label, model dtype, kv dtype, scaled): each reference first, then its candidates
CONFIGS = {
    "bf16": [("bf16 KV (reference)", "bf16", "bf16", True), ("fp8 KV, scaled", "bf16", "fp8", True),
             ("fp8 KV, plain cast", "bf16", "fp8", False)],
    "fp32": [("fp32 KV (reference)", "fp32", "fp32", True), ("bf16 KV", "fp32", "bf16", True),
             ("fp8 KV, scaled", "fp32", "fp8", True), ("fp8 KV, plain cast", "fp32", "fp8", False)],
}


@dataclass(frozen=True)
class Quality:
    agree: float
    mean_dlp: float
    max_dlp: float
    prefix: float


def _step(runner: ModelRunner, free: list[int], seqs: list[Sequence], counts: list[int],
          prefill: bool) -> torch.Tensor:
    """One batch through the runner, blocks from ``free`` as needed; (B, V) log-probs of the next tokens."""
    for s, n in zip(seqs, counts):
        while len(s.block_table) * runner.block_size < s.num_cached_tokens + n:
            s.block_table.append(free.pop())
    logits = runner.logits(ScheduledBatch(tuple(seqs), tuple(counts), num_decodes=0 if prefill else len(seqs)))
    for s, n in zip(seqs, counts):
        s.num_cached_tokens += n
    return torch.log_softmax(logits.float(), dim=-1)


def run_text(runner: ModelRunner, prompts: list[list[int]], n: int,
             forced: list[list[int]] | None) -> tuple[list[list[int]], torch.Tensor]:
    """Greedy (forced=None) or teacher-forced decoding of n tokens: (tokens, (B, n, V) log-probs)."""
    free = list(range(runner.num_blocks))
    seqs = [Sequence(list(p), SamplingParams(temperature=0.0)) for p in prompts]
    lps, tokens = [], [[] for _ in seqs]
    lp = _step(runner, free, seqs, [s.num_tokens for s in seqs], True)
    for i in range(n):
        lps.append(lp)
        for b, s in enumerate(seqs):
            t = forced[b][i] if forced is not None else int(lp[b].argmax())
            tokens[b].append(t)
            s.append_token(t)
        if i + 1 < n:
            lp = _step(runner, free, seqs, [1] * len(seqs), False)
    return tokens, torch.stack(lps, dim=1)


def compare(ref_tokens: list[list[int]], ref_lp: torch.Tensor, runner: ModelRunner,
            prompts: list[list[int]]) -> Quality:
    n = len(ref_tokens[0])
    _, lp = run_text(runner, prompts, n, forced=ref_tokens)
    idx = torch.tensor(ref_tokens)[:, :, None]  # (B, n, 1)
    dlp = (lp.gather(2, idx) - ref_lp.gather(2, idx)).abs()
    agree = (lp.argmax(-1) == idx[..., 0]).float().mean()
    free, _ = run_text(runner, prompts, n, forced=None)
    prefix = [next((i for i, (a, b) in enumerate(zip(f, r)) if a != b), n) for f, r in zip(free, ref_tokens)]
    return Quality(float(agree), float(dlp.mean()), float(dlp.max()), statistics.mean(prefix))


def speed(model: str, device: str, batch: int, context: int, steps: int, rounds: int) -> None:
    """Decode step time of bf16, fp8 scaled and fp8 plain KV pools on the same weights, rounds alternating;
    each pool as large as the engine's CPU default (1 GiB), which decides whether the decode mirror is used."""
    loaded = _load(model, "bf16", "bf16", True, device)
    tok, base = loaded.tokenizer, loaded.runner
    text = tok.encode(" ".join(PROMPTS) * 8)[:context]
    configs = {"bf16": (None, True), "fp8 scaled": (torch.float8_e4m3fn, True), "fp8 plain": (torch.float8_e4m3fn, False)}
    state = {}
    for name, (kv, scaled) in configs.items():
        num_blocks = num_blocks_for_budget(loaded.model_config, DEFAULT_CPU_KV_BYTES, 16,
                                           resolve_kv_dtype(kv, base.dtype))
        r = ModelRunner(base.model, loaded.model_config, device=device, dtype=base.dtype, kv_dtype=kv,
                        num_blocks=num_blocks, block_size=16, kv_scaled=scaled)
        r.calibrate_kv_scales([text])
        free = list(range(r.num_blocks))
        seqs = [Sequence(list(text), SamplingParams(temperature=0.0)) for _ in range(batch)]
        lp = _step(r, free, seqs, [context] * batch, True)
        state[name] = (r, free, seqs, lp)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, (r, free, seqs, lp) in state.items():
            for _ in range(steps):
                for b, s in enumerate(seqs):
                    s.append_token(int(lp[b].argmax()))
                t0 = time.perf_counter()
                lp = _step(r, free, seqs, [1] * batch, False)
                times[name].append(time.perf_counter() - t0)
            state[name] = (r, free, seqs, lp)
    ref = statistics.median(times["bf16"])
    for name, ts in times.items():
        print(f"{model} batch {batch} context ~{context}: {name:<10} decode step p50 {statistics.median(ts) * 1e3:7.1f} ms "
              f"({statistics.median(ts) / ref:.2f}x bf16), {len(ts)} steps", flush=True)


def _load(model: str, dtype: str, kv: str, scaled: bool, device: str) -> LoadedModel:
    return load_engine_model(model, device=device, dtype=dtype, kv_dtype=kv, kv_scales=scaled,
                             kv_cache_bytes=64 << 20, cuda_graphs=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["smollm2", "tiny-random"])
    p.add_argument("--reference", nargs="+", default=["bf16", "fp32"], choices=sorted(CONFIGS))
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--prompts", type=int, default=len(PROMPTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--speed", action="store_true", help="time decode steps per KV dtype instead")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, default=192)
    args = p.parse_args(argv)
    if args.speed:
        for model in args.model:
            speed(model, args.device, args.batch, args.context, steps=8, rounds=3)
        return 0
    print(f"| model | reference | candidate | agree | mean abs dlogprob | max | free-run prefix (of {args.tokens}) |")
    print("|---|---|---|---|---|---|---|")
    for model in args.model:
        for ref_name in args.reference:
            (ref_label, dtype, kv, scaled), *candidates = CONFIGS[ref_name]
            started = time.perf_counter()
            loaded = _load(model, dtype, kv, scaled, args.device)
            tok = loaded.tokenizer
            prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}]))
                       for q in PROMPTS[:args.prompts]]
            ref_tokens, ref_lp = run_text(loaded.runner, prompts, args.tokens, forced=None)
            for label, dtype, kv, scaled in candidates:
                q = compare(ref_tokens, ref_lp, _load(model, dtype, kv, scaled, args.device).runner, prompts)
                print(f"| {model} | {ref_label} | {label} | {q.agree:.3f} | {q.mean_dlp:.4f} | {q.max_dlp:.3f} "
                      f"| {q.prefix:.1f} |", flush=True)
            print(f"<!-- {model} vs {ref_name}: {time.perf_counter() - started:.0f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
