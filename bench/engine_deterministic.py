"""What `--deterministic` costs: decode tok/s of the default engine vs the batch-invariant one, side by side.

Both models loaded in this process (SmolLM2 by default), the same chat prompt, greedy, N forced new
tokens per sequence, timed like bench/engine_decode.py (prefill + N-1 decode steps, and decode-only);
rounds alternate default / deterministic so machine noise hits both alike; medians and the ratio.

    .venv/bin/python bench/engine_deterministic.py [--batch 1 64] [--rounds 3] [--threads 2] [--tile-rows 8]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine_decode import PROMPT, measure
from local_engine.loading import load_engine_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the engine's choice)")
    p.add_argument("--tile-rows", type=int, default=None, help="try another matmul tile (default: the engine's)")
    args = p.parse_args()
    load_avg = os.getloadavg()[0]
    models = {mode: load_engine_model(args.model, kv_cache_bytes=256 << 20, num_threads=args.threads,
                                      shares_process_with_server=False, deterministic=mode == "deterministic")
              for mode in ("default", "deterministic")}
    if args.tile_rows is not None:
        models["deterministic"].runner.model.make_batch_invariant(args.tile_rows)
    tok = models["default"].tokenizer
    prompt_ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPT}]))
    for loaded in models.values():
        measure(loaded, prompt_ids, 2, 4)  # warm-up
    for batch in args.batch:
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in models}
        for _ in range(args.rounds):
            for mode, loaded in models.items():
                runs[mode].append(measure(loaded, prompt_ids, batch, args.new_tokens))
        row: dict[str, object] = {"batch": batch}
        for key in ("tokens_per_s", "decode_tokens_per_s"):
            meds = {mode: statistics.median(r[key] for r in rs) for mode, rs in runs.items()}
            row |= {f"{mode}_{key}": round(v, 1) for mode, v in meds.items()}
            row[f"ratio_{key}"] = round(meds["deterministic"] / meds["default"], 3)
        print(json.dumps(row), flush=True)
    print(json.dumps({"model": args.model, "rounds": args.rounds, "new_tokens": args.new_tokens,
                      "prompt_tokens": len(prompt_ids), "threads": args.threads,
                      "tile_rows": models["deterministic"].runner.model.tile_rows,
                      "load_avg_start": round(load_avg, 2), "load_avg_end": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
