"""How fast `hybridgw replay` runs: one synthetic hour at 10 requests/s (36,000 requests; ISL lognormal
median ~400, OSL ~120, seeded), replayed against the embedded default policy (slo_cost: one CPU engine
+ hosted), an all-hosted policy and a one-engine kv_fit policy (CPU, and a GPU-class model); prints wall
and CPU seconds per policy, the extrapolation to a day (864,000 requests) and a digest of every
request's outcome (backend, refusal, rule, cost, TTFT, E2E).

    .venv/bin/python bench/replay_speed.py [--hours 1] [--rate 10] [--cases default,kv_fit]
    .venv/bin/python bench/replay_speed.py --hours 24 --cases default --compare-rev HEAD~3 --repeat 3
    .venv/bin/python bench/replay_speed.py --hours 24 --cases default --compare-tree ../main --repeat 3

`--compare-rev REV` replays each case with this tree and with REV's (git archive into a temporary
directory), alternating in child processes (`--repeat N` times each: medians and their ratio), and says
whether the digests agree: before/after in one run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies.estimator import litellm_price_table
from policies.loader import load_default_policy, load_policy
from policies.perf_model import perf_model_from_mapping
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.traffic import read_jsonl

BACKENDS = """\
version: 1
backends:
  local: {kind: engine, model: smollm2}
  openai: {kind: openai, base_url: https://api.openai.com/v1}
models:
  chat:
    deployments:
"""
POLICIES = {
    "all-hosted": BACKENDS + "      - {backend: openai, model: gpt-4o-mini}\nrules:\n  - {name: h, route: [openai]}\n",
    "kv_fit": BACKENDS + "      - {backend: local, model: smollm2}\n      - {backend: openai, model: gpt-4o-mini}\n"
              "rules:\n  - {name: fit, strategy: kv_fit, local: [local], spill: [openai]}\n",
}
# An illustrative GPU-class engine (7 ms decode steps, a 640k-token pool): the same traffic all fits locally.
GPU = {"engines": {"default": {"source": "GPU-like, illustrative", "prefill_fixed_s": 0.004, "prefill_per_token_s": 2e-5,
                               "decode_fixed_s": 0.006, "decode_per_seq_s": 5e-5, "decode_per_context_token_s": 1e-8,
                               "num_blocks": 40000}}}


def write_traffic(path: Path, hours: float, rate: float) -> None:
    rng = random.Random(3)
    t, end = 1764547200.0, 1764547200.0 + hours * 3600
    with path.open("w") as out:
        while t < end:
            t += rng.expovariate(rate)
            out.write(json.dumps({"time": round(t, 4), "team": rng.choice("abc"), "model": "chat",
                                  "prompt_tokens": min(6000, int(rng.lognormvariate(6.0, 0.8))) + 1,
                                  "output_tokens": min(1000, int(rng.lognormvariate(4.8, 0.7))) + 1}) + "\n")


def _case(name: str, traffic: list, price_table: dict) -> tuple:
    """(policy, traffic, setup) of one case."""
    setup = ReplaySetup(perf_model_from_mapping(GPU if name.endswith("-gpu") else {}), price_table)
    if name == "default":  # the embedded policy, its hosted backend present; traffic on its alias and team
        return (load_default_policy({"OPENAI_API_KEY": "set-for-replay"}),
                [replace(r, team="default", model="smollm2") for r in traffic], setup)
    return load_policy(POLICIES[name.removesuffix("-gpu")], name, {}), traffic, setup


def digest(out) -> str:  # noqa: ANN001 - Outcomes
    """Every request's outcome, bit for bit: equal digests = the same replay."""
    text = repr((out.backend, out.refusal, out.rule, out.cost, out.ttft, out.e2e, out.engine_busy_s))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def run_cases(path: Path, cases: list[str], rate: float) -> None:
    started = time.process_time()
    traffic = read_jsonl(path)
    read_cpu = time.process_time() - started
    day = 86400 * rate / len(traffic)
    print(json.dumps({"requests": len(traffic), "read_cpu_s": round(read_cpu, 2),
                      "read_cpu_s_per_day": round(read_cpu * day, 1)}), flush=True)
    prices = litellm_price_table()
    for name in cases:
        policy, records, setup = _case(name, traffic, prices)
        wall, cpu = time.perf_counter(), time.process_time()
        out = replay(policy, records, setup)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        local = sum(1 for b in out.backend if b == "local") / len(records)
        print(json.dumps({"policy": name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "local_share": round(local, 3),
                          "cpu_s_per_day": round(cpu * day, 1), "us_cpu_per_request": round(1e6 * cpu / len(records), 1),
                          "digest": digest(out), "load_avg": round(os.getloadavg()[0], 1)}), flush=True)


def compare(path: Path, cases: list[str], rate: float, rev: str, tmp: Path, repeat: int,
            tree: Path | None = None) -> None:
    """Each case with REV's tree (or the directory `tree`) and this one, alternating, in child processes,
    `repeat` times each; the medians and their ratio (the box is shared: only side-by-side figures compare)."""
    base = tmp / "base"
    if tree is not None:
        shutil.copytree(tree, base, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__"))
    else:
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
    # This script, copied into REV's tree: run from there, it imports REV's code (it puts its own tree first).
    script = base / "bench" / "_replay_speed_now.py"
    script.write_text(Path(__file__).read_text(encoding="utf-8"), encoding="utf-8")
    for name in cases:
        results: dict[str, list[dict]] = {rev: [], "this tree": []}
        for _ in range(repeat):
            for label, tree, runner in ((rev, base, script), ("this tree", ROOT, Path(__file__).resolve())):
                env = {**os.environ, "PYTHONPATH": str(tree)}
                out = subprocess.run([sys.executable, str(runner), "--child", str(path), "--rate", str(rate), "--cases",
                                      name], env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
                results[label].append(row)
                print(json.dumps({"tree": label, **row}), flush=True)
        old, new = (statistics.median(r["cpu_s"] for r in results[k]) for k in (rev, "this tree"))
        digests = {r["digest"] for rows in results.values() for r in rows}
        print(json.dumps({"policy": name, "runs_each": repeat, "median_cpu_s_old": old, "median_cpu_s_new": new,
                          "cpu_ratio_new_over_old": round(new / old, 3), "same_results": len(digests) == 1,
                          "load_avg_1_5_15": [round(x, 1) for x in os.getloadavg()]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--cases", default="default,all-hosted,kv_fit,kv_fit-gpu",
                        help="comma-separated: default, all-hosted, kv_fit (one CPU engine), kv_fit-gpu (GPU-class)")
    parser.add_argument("--compare-rev", help="also replay with this git revision's tree, side by side")
    parser.add_argument("--compare-tree", type=Path, help="as --compare-rev, with a directory's code (a checkout)")
    parser.add_argument("--repeat", type=int, default=1, help="with --compare-*: runs of each tree, interleaved")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: replay this traffic file
    args = parser.parse_args()
    cases = args.cases.split(",")
    if args.child is not None:
        run_cases(args.child, cases, args.rate)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traffic.jsonl"
        write_traffic(path, args.hours, args.rate)
        if args.compare_rev or args.compare_tree:
            compare(path, cases, args.rate, args.compare_rev or str(args.compare_tree), Path(tmp), args.repeat,
                    args.compare_tree)
        else:
            run_cases(path, cases, args.rate)


if __name__ == "__main__":
    main()
