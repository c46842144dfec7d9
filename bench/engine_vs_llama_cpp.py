"""hybridgw engine vs llama.cpp's llama-server on the same GGUF, the same workload, one run.

Starts `hybridgw engine --model GGUF` and ../shared/peers/llama_server.sh (llama-server, continuous
batching with one slot per stream) one at a time on free ports — never both at once on these cores —
and puts each through `hybridgw bench` (streamed chat, the same seeded prompts, ignore_eos) at each
concurrency. Rounds alternate the servers; medians of TTFT / ITL p50 and p99 and output tok/s per
server, then ours / llama.cpp's. The peer script builds llama.cpp on first use (~10 min).

    .venv/bin/python bench/engine_vs_llama_cpp.py [--concurrency 1 8] [--isl fixed:512] [--osl fixed:64]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import procs

PEERS = Path(os.environ.get("HYBRIDGW_PEERS", ROOT.parent / "shared" / "peers"))
FIGURES = ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "tokens_per_s")


@contextmanager
def our_engine(gguf: str, slots: int, extra: list[str]) -> Iterator[str]:
    port = procs.free_port()
    cmd = procs.hybridgw("engine", "--model", gguf, "--port", str(port), "--max-num-seqs", str(slots), *extra)
    with procs.running(cmd, f"http://127.0.0.1:{port}/health", name="hybridgw-engine", timeout_s=600, cwd=ROOT):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def llama_server(gguf: str, slots: int, extra: list[str]) -> Iterator[str]:
    port = procs.free_port()
    done = subprocess.run([str(PEERS / "llama_server.sh"), gguf, str(port), str(slots), *extra],
                          capture_output=True, text=True, check=False)
    found = re.search(r"pid=(\d+) url=(\S+)", done.stdout)
    if done.returncode != 0 or not found:
        raise SystemExit(f"llama_server.sh failed ({done.returncode}): {done.stderr[-2000:]}")
    pid, url = int(found.group(1)), found.group(2).removesuffix("/v1")
    try:
        yield url
    finally:
        os.kill(pid, 15)


def bench(url: str, concurrency: int, args: argparse.Namespace, out: Path) -> dict[str, float]:
    cmd = procs.hybridgw("bench", url, "--isl", args.isl, "--osl", args.osl, "--ignore-eos",
                         "--concurrency", str(concurrency), "--requests", str(args.requests * concurrency),
                         "--warmup", str(concurrency if args.warmup is None else args.warmup), "--seed", "7",
                         "--timeout", str(args.timeout), "--no-progress", "--out", str(out))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"hybridgw bench failed against {url}: {done.stderr[-2000:]}")
    s = json.loads((out / "results.json").read_text())["summary"]
    if s["ok"] != s["requests"]:
        raise SystemExit(f"{s['requests'] - s['ok']} failed requests against {url}: {s['errors']}")
    return {"ttft_p50_ms": s["ttft"]["p50"] * 1e3, "ttft_p99_ms": s["ttft"]["p99"] * 1e3,
            "itl_p50_ms": s["itl"]["p50"] * 1e3, "itl_p99_ms": s["itl"]["p99"] * 1e3,
            "tokens_per_s": s["output_token_throughput"], "output_tokens": s["output_tokens"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", default=None, help="default: the SmolLM2-135M Q4_1 GGUF the project ships")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--isl", default="fixed:512", help="prompt length, `hybridgw bench --isl` form")
    p.add_argument("--osl", default="fixed:64", help="output length, `hybridgw bench --osl` form")
    p.add_argument("--requests", type=int, default=3, help="measured requests per stream, per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=None, help="warm-up requests per run (default: one per stream)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds without a byte before a request fails (llama-server sends nothing until "
                        "its first token: 64 queued prompts take minutes)")
    p.add_argument("--engine-arg", action="append", default=[], help="extra `hybridgw engine` argument")
    p.add_argument("--llama-arg", action="append", default=[], help="extra llama-server argument")
    args = p.parse_args()
    if args.gguf is None:
        from local_engine.loaders.registry import smollm2_gguf_path
        args.gguf = str(smollm2_gguf_path())
    print(f"load average at start: {os.getloadavg()[0]:.2f} (shared machine: compare only side by side)")
    servers = {"hybridgw": (our_engine, args.engine_arg), "llama.cpp": (llama_server, args.llama_arg)}
    slots = max(args.concurrency)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="engine-vs-llama-") as tmp:
        for rnd in range(args.rounds):
            for name, (server, extra) in servers.items():
                with server(args.gguf, slots, extra) as url:
                    for c in args.concurrency:
                        r = bench(url, c, args, Path(tmp) / f"{name}-{c}-{rnd}")
                        results.setdefault((name, c), []).append(r)
                        print(json.dumps({"server": name, "concurrency": c, "round": rnd,
                                          **{k: round(v, 2) for k, v in r.items()}}), flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(table(results, args.concurrency))
    return 0


def table(results: dict[tuple[str, int], list[dict[str, float]]], concurrencies: list[int]) -> str:
    """Markdown: medians per server and concurrency, and ours / llama.cpp's (ms: < 1 is better)."""
    lines = ["| streams | server | TTFT p50 / p99 ms | ITL p50 / p99 ms | output tok/s |",
             "|---:|---|---|---|---:|"]
    for c in concurrencies:
        med = {name: {k: statistics.median(r[k] for r in results[(name, c)]) for k in FIGURES}
               for name in ("hybridgw", "llama.cpp")}
        for name, m in med.items():
            lines.append(f"| {c} | {name} | {m['ttft_p50_ms']:.0f} / {m['ttft_p99_ms']:.0f} | "
                         f"{m['itl_p50_ms']:.1f} / {m['itl_p99_ms']:.1f} | {m['tokens_per_s']:.1f} |")
        ours, theirs = med["hybridgw"], med["llama.cpp"]
        lines.append(f"| {c} | ratio ours / llama.cpp | {ours['ttft_p50_ms'] / theirs['ttft_p50_ms']:.2f} / "
                     f"{ours['ttft_p99_ms'] / theirs['ttft_p99_ms']:.2f} | "
                     f"{ours['itl_p50_ms'] / theirs['itl_p50_ms']:.2f} / {ours['itl_p99_ms'] / theirs['itl_p99_ms']:.2f}"
                     f" | **{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}×** |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
