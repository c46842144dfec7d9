"""Local engine decode throughput: our ModelRunner vs Hugging Face transformers `generate`, one run.

Same GGUF (SmolLM2 by default), same chat prompt, greedy, N forced new tokens per sequence, timed
the way the peer times `generate` (prefill + N-1 decode steps). Ours runs at each --threads
count, before and after the peer (medians over rounds); the peer is ../shared/peers/hf_generate.sh
at bf16 (and fp32 at batch 1). Prints JSON lines and a markdown table; --write-docs updates the
"Local engine: decode throughput vs transformers" section of docs/benchmarks.md. --step-ab instead
times single decode steps of each --threads setting in one process, rounds alternating (p50 of wall
and process CPU per step, greedy tokens compared); "2:1" = 2 threads, steps of <= 16 tokens on 1;
a "/torch" suffix runs that setting with the native kernels off (a second copy of the model), "/omp"
with the kernels' work split over OpenMP from 4 M multiply-adds (the earlier default) instead of their own
pool from 256 K ("/pool", the default); --profile prints torch.profiler's op
table of the first setting's steps.

    .venv/bin/python bench/engine_decode.py [--batch 1 16 64] [--threads 1 2] [--write-docs]
    .venv/bin/python bench/engine_decode.py --step-ab --batch 1 --threads 1 2 2:1 --rounds 6
    .venv/bin/python bench/engine_decode.py --step-ab --batch 1 --threads 2:1 2:1/torch --prompt-tokens 512
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local_engine.cli import passive_openmp_waits

passive_openmp_waits()  # as `hybridgw engine` runs (before torch loads libgomp)

import torch

from local_engine.batch import ScheduledBatch
from local_engine.loading import LoadedModel, load_engine_model
from local_engine.native.kernels import DEFAULT_SPLIT_WORK
from local_engine.runner import ModelRunner
from local_engine.runner_threads import SMALL_STEP_TOKENS, StepThreads
from local_engine.sequence import SamplingParams, Sequence

PROMPT = "Write a short story about a lighthouse keeper."  # the peer script's default prompt
SECTION = "## Local engine: decode throughput vs transformers"


def run_steps(runner: ModelRunner, seqs: list[Sequence], counts: list[int], is_prefill: bool,
              free: list[int]) -> None:
    """One engine step as the engine loop does it: blocks as needed, run, then advance the sequences."""
    for seq, n in zip(seqs, counts):
        while len(seq.block_table) * runner.block_size < seq.num_cached_tokens + n:
            seq.block_table.append(free.pop())
    out = runner.run(ScheduledBatch(tuple(seqs), tuple(counts), num_decodes=0 if is_prefill else len(seqs)))
    for seq, n, token in zip(seqs, counts, out.token_ids):
        seq.num_cached_tokens += n
        if token is not None:
            seq.append_token(token)


def measure(loaded: LoadedModel, prompt_ids: list[int], batch: int, new_tokens: int) -> dict[str, float]:
    runner = loaded.runner
    free = list(range(runner.num_blocks))
    seqs = [Sequence(list(prompt_ids), SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True))
            for _ in range(batch)]
    start = time.perf_counter()
    run_steps(runner, seqs, [len(prompt_ids)] * batch, True, free)
    prefilled = time.perf_counter()
    for _ in range(new_tokens - 1):
        run_steps(runner, seqs, [1] * batch, False, free)
    end = time.perf_counter()
    return {"seconds": end - start, "tokens_per_s": batch * new_tokens / (end - start),
            "decode_tokens_per_s": batch * (new_tokens - 1) / (end - prefilled)}


def ours(loaded: LoadedModel, prompt_ids: list[int], args: argparse.Namespace, rounds: int) -> list[dict]:
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        measure(loaded, prompt_ids, 1, 4)  # warm-up at this thread count
        for batch in args.batch:
            for _ in range(rounds):
                rows.append({"engine": "hybridgw", "dtype": str(loaded.runner.dtype).removeprefix("torch."),
                             "threads": threads, "batch": batch, "prompt_tokens": len(prompt_ids),
                             "new_tokens": args.new_tokens, **measure(loaded, prompt_ids, batch, args.new_tokens)})
    return rows


def step_ab(loaded: LoadedModel, prompt_ids: list[int], args: argparse.Namespace,
            torch_path: LoadedModel | None = None) -> None:
    """Single decode steps per --threads setting ("N" or "N:S", "/torch": native kernels off), rounds
    alternating, one process."""
    settings = [str(t) for t in args.threads]
    times: dict[tuple[str, int], list[tuple[float, float]]] = {}
    tokens: dict[tuple[str, int], list[list[int]]] = {}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for batch in args.batch:
            for setting in settings:
                threads, _, path = setting.partition("/")
                runner = (torch_path if path == "torch" and torch_path is not None else loaded).runner
                full, _, small = threads.partition(":")
                runner.step_threads = StepThreads(int(full), int(small or full), SMALL_STEP_TOKENS)
                if runner.model.native is not None:
                    runner.model.native.threads = int(full)  # the kernels' own threads
                    if path == "omp":
                        runner.model.native.set_threading(use_openmp=True)
                    else:
                        runner.model.native.set_threading(use_openmp=False, min_work=DEFAULT_SPLIT_WORK)
                free = list(range(runner.num_blocks))
                seqs = [Sequence(list(prompt_ids), SamplingParams(max_tokens=args.new_tokens, temperature=0.0,
                                                                  ignore_eos=True)) for _ in range(batch)]
                run_steps(runner, seqs, [len(prompt_ids)] * batch, True, free)
                for _ in range(args.new_tokens - 1):
                    t0, c0 = time.perf_counter(), time.process_time()
                    with profiled(args.profile and setting == settings[0]):
                        run_steps(runner, seqs, [1] * batch, False, free)
                    times.setdefault((setting, batch), []).append(
                        (time.perf_counter() - t0, time.process_time() - c0))
                tokens.setdefault((setting, batch), []).append(seqs[0].completion_token_ids)
        load.append(os.getloadavg()[0])
    print(f"load average (1 min) per round: {' '.join(f'{x:.1f}' for x in load)}")
    print("| batch | threads | step wall p50 ms | step CPU p50 ms | steps | greedy tokens as the first |")
    print("|---:|---|---:|---:|---:|---|")
    for batch in args.batch:
        first = tokens[(settings[0], batch)][0]
        for setting in settings:
            wall, cpu = zip(*times[(setting, batch)])
            same = sum(t == first for t in tokens[(setting, batch)])
            print(f"| {batch} | {setting} | {statistics.median(wall) * 1e3:.1f} "
                  f"| {statistics.median(cpu) * 1e3:.1f} | {len(wall)} | {same}/{len(tokens[(setting, batch)])} rounds |")


class profiled:
    """torch.profiler around the steps it wraps, one table for all of them at exit (--profile), and the
    calling thread's CPU time in each native-kernel call (torch's profiler does not see them)."""

    profiler: torch.profiler.profile | None = None
    native_cpu: dict[str, float] = {}
    steps = 0

    @staticmethod
    def count_native(kernels: object) -> None:
        for name in ("q4_linear", "rope_", "paged_decode_"):
            call = getattr(kernels, name)

            def timed(*args: object, _call=call, _name=name, **kw: object) -> object:
                t0 = time.thread_time()
                try:
                    return _call(*args, **kw)
                finally:
                    profiled.native_cpu[_name] = profiled.native_cpu.get(_name, 0.0) + time.thread_time() - t0
            setattr(kernels, name, timed)

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        if self.on:
            if profiled.profiler is None:
                profiled.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                profiled.profiler.__enter__()
            profiled.profiler.step()
            profiled.steps += 1

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def report() -> None:
        if profiled.profiler is not None:
            profiled.profiler.__exit__(None, None, None)
            print(profiled.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        if profiled.native_cpu:
            print("native kernels, calling thread's CPU ms per step:",
                  {k: round(v / max(1, profiled.steps) * 1e3, 2) for k, v in profiled.native_cpu.items()})


def peer(args: argparse.Namespace, gguf: Path) -> tuple[list[dict], list[str]]:
    script = args.peers / "hf_generate.sh"
    commands = [[str(script), str(gguf), "--batch", *map(str, args.batch), "--dtype", "bf16",
                 "--new-tokens", str(args.new_tokens)],
                [str(script), str(gguf), "--batch", "1", "--dtype", "fp32", "--new-tokens", str(args.new_tokens)]]
    rows = []
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(f"peer failed ({proc.returncode}): {proc.stderr[-2000:]}", file=sys.stderr)
        rows.extend(lines)
    return rows, [shlex.join(c) for c in commands]


def summarise(our_rows: list[dict], peer_rows: list[dict], batches: list[int],
              threads: list[int]) -> list[str]:
    def med(rows: list[dict], key: str = "tokens_per_s") -> float | None:
        values = [r[key] for r in rows]
        return round(statistics.median(values), 1) if values else None

    head = ("| batch | " + " | ".join(f"hybridgw {t} thr (generate / decode-only)" for t in threads)
            + " | transformers bf16 | transformers fp32 | best ratio |")
    lines = [head, "|" + "---|" * (len(threads) + 4)]
    for b in batches:
        cells, best_ours = [], 0.0
        for t in threads:
            rows = [r for r in our_rows if r["batch"] == b and r["threads"] == t]
            gen, dec = med(rows), med(rows, "decode_tokens_per_s")
            best_ours = max(best_ours, gen or 0.0)
            cells.append(f"{gen} / {dec}")
        bf16 = med([r for r in peer_rows if r["batch"] == b and r["dtype"] == "bf16"])
        fp32 = med([r for r in peer_rows if r["batch"] == b and r["dtype"] == "fp32"])
        best_peer = max(x for x in (bf16, fp32, 0.0) if x is not None)
        ratio = f"**{best_ours / best_peer:.1f}×**" if best_peer else "n/a"
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {bf16 or '—'} | {fp32 or '—'} | {ratio} |")
    return lines


def write_docs(path: Path, body: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + ("" if nxt < 0 else "\n" + text[nxt + 1:])
    path.write_text(text, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--threads", nargs="+", default=["1", "2"], help='counts; with --step-ab also "2:1"')
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="our rounds before and again after the peer")
    p.add_argument("--peers", type=Path, default=ROOT.parent / "shared" / "peers")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--write-docs", action="store_true")
    p.add_argument("--step-ab", action="store_true", help="time single decode steps per --threads setting")
    p.add_argument("--prompt-tokens", type=int, default=0, help="with --step-ab: a prompt of this many tokens")
    p.add_argument("--profile", action="store_true", help="with --step-ab: the op table of the first setting")
    args = p.parse_args()
    if not args.step_ab:
        args.threads = [int(t) for t in args.threads]

    loaded = load_engine_model(args.model, kv_cache_bytes=512 << 20)
    tok = loaded.tokenizer
    prompt_ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPT}]))
    if args.step_ab:
        if args.prompt_tokens:
            prompt_ids = (prompt_ids * (args.prompt_tokens // len(prompt_ids) + 1))[:args.prompt_tokens]
        torch_path = None
        if any(str(t).endswith("/torch") for t in args.threads):
            os.environ["HYBRIDGW_NATIVE"] = "off"
            torch_path = load_engine_model(args.model, kv_cache_bytes=512 << 20)
            del os.environ["HYBRIDGW_NATIVE"]
        if args.profile and loaded.runner.model.native is not None:
            profiled.count_native(loaded.runner.model.native)
        with torch.inference_mode():
            step_ab(loaded, prompt_ids, args, torch_path)
        profiled.report()
        return
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        our_rows = ours(loaded, prompt_ids, args, args.rounds)
    peer_rows, peer_cmds = ([], []) if args.no_peer else peer(args, loaded_gguf(args.model))
    with torch.inference_mode():
        our_rows += ours(loaded, prompt_ids, args, args.rounds)
    for row in our_rows + peer_rows:
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))
    table = summarise(our_rows, peer_rows, args.batch, args.threads)
    print("\n".join(table))
    if args.write_docs:
        write_docs(ROOT / "docs" / "benchmarks.md", docs_body(args, table, peer_cmds, len(prompt_ids), load_before))


def loaded_gguf(spec: str) -> Path:
    from local_engine.loaders.registry import resolve_model

    source = resolve_model(spec)
    if source.kind != "gguf" or source.path is None:
        raise SystemExit("the transformers peer needs a GGUF model (e.g. --model smollm2)")
    return source.path


def docs_body(args: argparse.Namespace, table: list[str], peer_cmds: list[str], prompt_tokens: int,
              load: float) -> str:
    cmd = " ".join(["    .venv/bin/python bench/engine_decode.py", "--batch", *map(str, args.batch),
                    "--threads", *map(str, args.threads), "--write-docs"])
    about = (f"Greedy decode of {args.new_tokens} forced new tokens per sequence after the {prompt_tokens}-token "
             f"chat prompt \"{PROMPT}\", model `{args.model}`, timed like the peer's `generate` (prefill + "
             f"{args.new_tokens - 1} decode steps; tokens/s = batch × {args.new_tokens} / seconds). Ours: the "
             "`ModelRunner` driven step by step — paged KV cache, bf16 weights pre-packed for oneDNN, float32 "
             "residual stream, matmuls of at most 4 rows on the GGUF's own 4-bit codes — medians over "
             f"{2 * args.rounds} rounds split before and after the peer; \"decode-only\" leaves the prefill "
             "out. Peer in the same run: transformers `generate` on the same GGUF (dequantised), with its "
             "default 2 threads. On a CPU of at most 4 cores the engine defaults to one thread fewer than "
             "the cores (here 1), leaving a core to its server; 2-thread runs suffer most when other jobs "
             "share the machine, so compare within a column and quote the ratio.")
    when = (f"{time.strftime('%Y-%m-%d')}, this 2-core CPU machine (AVX512-BF16), shared with other jobs "
            f"(load average {load:.1f} at the start); ratio = our best / the peer's best at that batch:")
    peers = [f"    {c.replace(str(ROOT) + '/', '').replace(str(ROOT.parent) + '/', '../')}" for c in peer_cmds]
    return "\n".join([SECTION, "", about, "", cmd, "", "Peer commands (run by the script):", "", *peers, "",
                      when, "", *table, ""])


if __name__ == "__main__":
    main()
