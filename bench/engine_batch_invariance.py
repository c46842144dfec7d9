"""Do greedy outputs depend on the batch? N prompts one at a time vs all at once, in one engine.

Loads the model in-process (SmolLM2 by default), runs each prompt alone, then all together
(a different batch size at every step as they finish), and counts identical greedy outputs.

    .venv/bin/python bench/engine_batch_invariance.py [--prompts 20] [--max-tokens 48] [--dtype bf16] [--deterministic]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local_engine.config import EngineConfig
from local_engine.engine import LLMEngine
from local_engine.engine_build import build_engine
from local_engine.loading import load_engine_model
from local_engine.sequence import SamplingParams, Sequence

TOPICS = ["the sea", "a lighthouse", "bread", "the moon", "trains", "a small dog", "winter", "coffee",
          "mountains", "a library", "rain", "bees", "an old clock", "the desert", "a violin", "autumn leaves",
          "a city at night", "tea", "a river", "the stars", "chess", "a garden", "snow", "the wind"]


def run(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> list[tuple[list[int], list[float]]]:
    """Greedy tokens and the chosen tokens' logprobs of each prompt."""
    seqs = [Sequence(p, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=0))
            for p in prompts]
    for seq in seqs:
        engine.add_request(seq)
    logprobs: dict[int, list[float]] = {s.seq_id: [] for s in seqs}
    while engine.has_unfinished():
        for out in engine.step():
            logprobs[out.seq_id].append(out.logprobs.logprob)
    return [(seq.completion_token_ids, logprobs[seq.seq_id]) for seq in seqs]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--dtype", default=None)
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--deterministic", action="store_true", help="the batch-invariant engine")
    args = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    loaded = load_engine_model(args.model, dtype=args.dtype, num_threads=args.threads,
                               deterministic=args.deterministic)
    tok = loaded.tokenizer
    prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": f"Write a short poem about {t}."}]))
               for t in (TOPICS * 2)[:args.prompts]]
    engine = build_engine(EngineConfig(model=args.model, enable_prefix_caching=False), loaded)
    start = time.perf_counter()
    alone = [run(engine, [prompt], args.max_tokens)[0] for prompt in prompts]
    together = run(engine, prompts, args.max_tokens)
    same = sum(a[0] == b[0] for a, b in zip(alone, together))
    same_logprobs = sum(a[1] == b[1] for a, b in zip(alone, together))
    first_diff = [next((i for i, (x, y) in enumerate(zip(a[0], b[0])) if x != y), None)
                  for a, b in zip(alone, together)]
    print(json.dumps({"model": args.model, "dtype": str(loaded.runner.dtype), "prompts": len(prompts),
                      "deterministic": args.deterministic, "max_tokens": args.max_tokens, "identical": same,
                      "identical_logprobs": same_logprobs,
                      "first_differing_token": [d for d in first_diff if d is not None],
                      "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
