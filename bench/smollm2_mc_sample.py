"""Benchmark: what SmolLM2-135M (the engine's default model) answers on multiple choice (issue #16
item 2, a sample): LLMRouter's test queries, one next-token pass per question through our engine
(`/v1/completions`, max_tokens 1, top-20 logprobs); P(right) = the right letter's probability among
the option letters (a soft label), accuracy = the argmax letter, beside chance.

    .venv/bin/python bench/smollm2_mc_sample.py [--per-task 50] [--url http://127.0.0.1:8100]
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "llmrouter" / "default_query_test.jsonl"
TASKS = ("mmlu", "arc_challenge", "commonsense_qa", "openbook_qa")


def options(row: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(letters, texts): `choices` is a list of texts or a {label, text} dict, stored as Python repr."""
    raw = row["choices"]
    choices = ast.literal_eval(raw) if isinstance(raw, str) else raw
    if isinstance(choices, dict):
        return list(choices["label"]), list(choices["text"])
    return [chr(65 + i) for i in range(len(choices))], list(choices)


def prompt(row: dict[str, Any]) -> str:
    letters, texts = options(row)
    lines = "\n".join(f"{k}. {t}" for k, t in zip(letters, texts, strict=True))
    return f"Question: {row['query'].strip()}\n{lines}\nAnswer:"


def letter_probs(url: str, text: str, letters: list[str]) -> dict[str, float]:
    body = json.dumps({"model": "smollm2", "prompt": text, "max_tokens": 1, "temperature": 0,
                       "logprobs": 20}).encode()
    req = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        top = json.load(resp)["choices"][0]["logprobs"]["top_logprobs"][0]
    mass = {k: 0.0 for k in letters}
    for token, lp in top.items():
        key = token.strip()
        if key in mass:
            mass[key] += math.exp(lp)
    total = sum(mass.values())
    return {k: (v / total if total else 1 / len(letters)) for k, v in mass.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-task", type=int, default=50)
    parser.add_argument("--url", help="a running engine; default: start `hybridgw engine` on port 8193")
    args = parser.parse_args()
    proc = None
    url = args.url
    if url is None:
        url = "http://127.0.0.1:8193"
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "engine", "--port", "8193", "--threads", "2"])
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=2)
                break
            except OSError:
                time.sleep(1)
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    print("| task | n | options | mean P(right) | accuracy (argmax) | chance |\n|---|---:|---:|---:|---:|---:|")
    try:
        for task in TASKS:
            picked = [r for r in rows if r["task_name"] == task][:args.per_task]
            probs, hits, sizes = [], 0, []
            for row in picked:
                letters, _ = options(row)
                p = letter_probs(url, prompt(row), letters)
                probs.append(p.get(row["ground_truth"].strip(), 0.0))
                hits += max(p, key=p.__getitem__) == row["ground_truth"].strip()
                sizes.append(len(letters))
            chance = sum(1 / s for s in sizes) / len(sizes)
            print(f"| {task} | {len(picked)} | {max(sizes)} | {sum(probs) / len(probs):.3f} | "
                  f"{hits / len(picked):.2f} | {chance:.2f} |", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
