"""Where a burst of C streams spends the engine's time, in-process: C prompts arrive at once, each decodes N tokens.

Builds the LLMEngine as `hybridgw engine` does (SmolLM2 by default), adds C requests of --isl random tokens
(distinct: no prefix-cache hits) with --osl forced tokens each, and steps until all finish. Per step: its decode
rows, prompt tokens, wall and CPU time, and the model call's wall (what is left is scheduling, sampling and
Python). Prints steps by kind (prefill-only, mixed, decode-only) with their summed and median wall, the
first-token step of the last stream, and output tok/s of the whole burst (the server bench's aggregate without
HTTP). --config passes EngineConfig fields as JSON (e.g. '{"max_num_batched_tokens": 512}').

    .venv/bin/python bench/engine_wave.py [--concurrency 64] [--isl 128] [--osl 64] [--config JSON] [--steps]
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
from local_engine.engine_build import build_engine, load  # noqa: E402
from local_engine.sequence import SamplingParams, Sequence  # noqa: E402


def kind(decodes: int, prompt_tokens: int) -> str:
    return "decode" if not prompt_tokens else "prefill" if not decodes else "mixed"


def run_wave(engine, runner, vocab: int, args: argparse.Namespace, seed: int) -> list[dict]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    for _ in range(args.concurrency):
        engine.add_request(Sequence([rng.randrange(100, vocab) for _ in range(args.isl)],
                                    SamplingParams(max_tokens=args.osl, temperature=0.0, ignore_eos=True)))
    run, model_call, seen = runner.run, runner.model.forward, {"model": 0.0}

    def timed_run(batch):  # type: ignore[no-untyped-def]
        seen["decodes"], seen["prompt"] = batch.num_decodes, batch.total_tokens - batch.num_decodes
        t = time.perf_counter()
        out = run(batch)
        seen["run"] = time.perf_counter() - t
        return out

    def timed_model(*a, **k):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = model_call(*a, **k)
        seen["model"] += time.perf_counter() - t
        return out

    runner.run, runner.model.forward = timed_run, timed_model
    steps, started = [], time.perf_counter()
    try:
        while engine.has_unfinished():
            seen["model"] = 0.0
            t, c = time.perf_counter(), time.process_time()
            outs = engine.step()
            wall = time.perf_counter() - t
            steps.append({"t": t - started, "wall": wall, "cpu": time.process_time() - c, "run": seen["run"],
                          "model": seen["model"], "decodes": seen["decodes"], "prompt": seen["prompt"],
                          "firsts": sum(1 for o in outs if o.num_completion_tokens == 1),
                          "kind": kind(seen["decodes"], seen["prompt"])})
    finally:
        runner.run, runner.model.forward = run, model_call
    return steps


def summary(steps: list[dict], args: argparse.Namespace) -> dict:
    total = sum(s["wall"] for s in steps)
    out: dict = {"steps": len(steps), "wall_s": round(total, 2), "tok_per_s": round(args.concurrency * args.osl / total, 1),
                 "model_share": round(sum(s["model"] for s in steps) / total, 3)}
    firsts = [s["t"] + s["wall"] for s in steps if s["firsts"]]
    out["first_token_last_s"] = round(max(firsts), 2) if firsts else None
    out["first_token_p50_s"] = round(statistics.median(
        [s["t"] + s["wall"] for s in steps for _ in range(s["firsts"])]), 2) if firsts else None
    for name in ("prefill", "mixed", "decode"):
        part = [s for s in steps if s["kind"] == name]
        if part:
            out[name] = {"n": len(part), "wall_s": round(sum(s["wall"] for s in part), 2),
                         "p50_ms": round(statistics.median(s["wall"] for s in part) * 1e3, 1),
                         "model_p50_ms": round(statistics.median(s["model"] for s in part) * 1e3, 1),
                         "outside_run_p50_ms": round(statistics.median(s["wall"] - s["run"] for s in part) * 1e3, 1)}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--isl", type=int, default=128)
    p.add_argument("--osl", type=int, default=64)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--config", default="{}", help="EngineConfig fields as JSON")
    p.add_argument("--steps", action="store_true", help="print every step")
    p.add_argument("--a-config", default=None, help="A/B: side A's EngineConfig fields over --config (JSON)")
    p.add_argument("--a-runner", default=None, help='A/B: side A\'s ModelRunner attributes, e.g. '
                   '\'{"native_decode_max_seqs": 3}\'')
    args = p.parse_args()
    base = json.loads(args.config)
    config = EngineConfig(model=args.model, **base)
    loaded = load(config)
    runner = loaded.runner
    vocab = runner.model_config.vocab_size
    ab = args.a_config is not None or args.a_runner is not None
    a_config = EngineConfig(model=args.model, **{**base, **json.loads(args.a_config or "{}")})
    a_runner, b_runner = json.loads(args.a_runner or "{}"), {k: getattr(runner, k) for k in json.loads(args.a_runner or "{}")}
    results: dict[str, list[dict]] = {"A": [], "B": []}
    for r in range(args.rounds):
        side = ("AB"[r % 2] if (r // 2) % 2 == 0 else "BA"[r % 2]) if ab else "B"
        for k, v in (a_runner if side == "A" else b_runner).items():
            setattr(runner, k, v)
        engine = build_engine(a_config if side == "A" else config, loaded)
        load_before = os.getloadavg()[0]
        steps = run_wave(engine, runner, vocab, args, seed=r // 2 if ab else r)
        if args.steps:
            for s in steps:
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}))
        results[side].append(summary(steps, args))
        print(json.dumps({"round": r, "side": side, "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                          **results[side][-1]}))
    if ab and results["A"] and results["B"]:
        med = {side: statistics.median(x["tok_per_s"] for x in results[side]) for side in "AB"}
        print(json.dumps({"a": {"config": args.a_config, "runner": args.a_runner}, "tok_per_s_median": med,
                          "b_over_a": round(med["B"] / med["A"], 3)}))


if __name__ == "__main__":
    main()
