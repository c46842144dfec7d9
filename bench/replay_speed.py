"""How fast `hybridgw replay` runs: one synthetic hour at 10 requests/s (36,000 requests; ISL lognormal
median ~400, OSL ~120, seeded), replayed against an all-hosted policy and a one-CPU-engine kv_fit
policy; prints wall and CPU seconds per policy and the extrapolation to a day (864,000 requests).

    .venv/bin/python bench/replay_speed.py [--hours 1] [--rate 10]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies.estimator import litellm_price_table
from policies.loader import load_policy
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traffic.jsonl"
        write_traffic(path, args.hours, args.rate)
        started = time.process_time()
        traffic = read_jsonl(path)
        read_cpu = time.process_time() - started
    setup = ReplaySetup(perf_model_from_mapping({}), litellm_price_table())
    day = 86400 * args.rate / len(traffic)
    print(json.dumps({"requests": len(traffic), "read_cpu_s": round(read_cpu, 2), "read_cpu_s_per_day": round(read_cpu * day, 1)}))
    gpu = ReplaySetup(perf_model_from_mapping(GPU), setup.price_table)
    for name, text, how in [(n, t, setup) for n, t in POLICIES.items()] + [("kv_fit, GPU-like engine", POLICIES["kv_fit"], gpu)]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = replay(load_policy(text, name, {}), traffic, how)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        local = sum(1 for b in out.backend if b == "local") / len(traffic)
        print(json.dumps({"policy": name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "local_share": round(local, 3),
                          "cpu_s_per_day": round(cpu * day, 1), "us_cpu_per_request": round(1e6 * cpu / len(traffic), 1)}))


if __name__ == "__main__":
    main()
