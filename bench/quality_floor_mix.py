"""Benchmark (offline): a policy with the quality floor vs capacity-only routing on RouteLLM's MMLU
held-out subjects. Every prompt goes through the real `build_facts` + `decide()` with the shipped
difficulty model; the local engine is full for a seeded random share of the requests. Local answers
count Mixtral's correctness (the "weak" model), hosted ones GPT-4's; hosted cost is the policy's
estimate for gpt-4o-mini prices (what the facts carry), local is free. Beside each: the accuracy random
routing would get at the same share local (what the router must beat).

    .venv/bin/python bench/quality_floor_mix.py [--data ../shared/data/routing] [--full 0.3]
"""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from types import MappingProxyType

import numpy as np

from policies.offline import configure_offline_env

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing"
POLICY = """
version: 1
backends:
  local: {kind: engine, model: smollm2}
  hosted: {kind: openai, base_url: "http://hosted/v1"}
models:
  chat:
    deployments:
      - {backend: local, model: smollm2}
      - {backend: hosted, model: gpt-4o-mini}
rules:
"""
RULES = {
    "kv_fit (capacity only)": "  - {name: r, strategy: kv_fit, local: [local], spill: [hosted]}\n",
    "quality_floor 0.25": "  - {name: r, strategy: quality_floor, max_difficulty: 0.25, local: [local], spill: [hosted]}\n",
    "quality_floor 0.2": "  - {name: r, strategy: quality_floor, max_difficulty: 0.2, local: [local], spill: [hosted]}\n",
    "quality_floor 0.15": "  - {name: r, strategy: quality_floor, max_difficulty: 0.15, local: [local], spill: [hosted]}\n",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--full", type=float, default=0.3, help="share of requests that find the engine full")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    configure_offline_env()
    from policies.calibration import Calibration
    from policies.compiled import compile_policy
    from policies.decide import decide
    from policies.estimator import litellm_price_table
    from policies.facts import build_facts
    from policies.live import EngineSnapshot, LiveState
    from policies.loader import load_policy
    from policies.quality import dataset
    from policies.quality.lazy import LazyQuality
    from policies.quality.load import read_weights
    from policies.tokens import TokenCounter

    held_out = read_weights()["test_subjects"]
    data, _ = dataset.drop(dataset.concat([dataset.read_csv(args.data / "routellm_mmlu" / f"{s}.csv") for s in held_out]),
                           dataset.read_contaminated(args.data / "routellm_mmlu_contaminated.jsonl"))
    full = np.random.default_rng(args.seed).random(len(data.prompts)) < args.full
    states = [LiveState(100.0, MappingProxyType({"local": EngineSnapshot(taken_at=99.9, kv_bytes_per_token=23040,
                                                                          num_blocks_total=1000,
                                                                          num_blocks_free=free)}))
              for free in (1000, 0)]
    quality, counter, prices = LazyQuality(), TokenCounter(), litellm_price_table()
    hard = data.strong & ~data.weak  # prompts only the strong model gets right
    print(f"{len(data.prompts)} held-out prompts ({len(held_out)} subjects); engine full for {full.mean():.0%}; "
          f"weak {data.weak.mean():.3f}, strong {data.strong.mean():.3f}; 'hard' = only strong right "
          f"({hard.mean():.1%})\n")
    print("| policy | share local | accuracy | random routing, same share local | hosted $ per 1k requests "
          "| hard prompts sent local |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rule in RULES.items():
        loaded = load_policy(textwrap.dedent(POLICY) + rule, "bench.yaml", {})
        compiled = compile_policy(loaded.policy, prices)
        local = np.zeros(len(data.prompts), dtype=bool)
        cost = 0.0
        for i, prompt in enumerate(data.prompts):
            body = {"model": "chat", "max_tokens": 8, "messages": [{"role": "user", "content": prompt}]}
            live = states[int(full[i])]
            facts = build_facts(compiled, body, "default", live, counter=counter, calibration=Calibration(),
                                difficulty=quality, category=quality.category)
            target = decide(compiled, facts, live).targets[0].backend
            local[i] = target == "local"
            cost += 0.0 if local[i] else facts.est_cost_usd.get("hosted", 0.0)
        accuracy = np.where(local, data.weak, data.strong).mean()
        chance = local.mean() * data.weak.mean() + (1 - local.mean()) * data.strong.mean()  # expected
        print(f"| {name} | {local.mean():.1%} | {accuracy:.3f} | {chance:.3f} | {1000 * cost / len(local):.4f} | "
              f"{(local & hard).sum() / hard.sum():.1%} |")


if __name__ == "__main__":
    main()
