"""Benchmark: what SmolLM2-135M (the engine's default model) answers on multiple choice (issue #16
item 2, a sample): LLMRouter's test queries, one next-token pass per question through our engine
(`/v1/completions`, max_tokens 1, top-20 logprobs); P(right) = the right letter's probability among
the option letters (a soft label), accuracy = the argmax letter, beside chance. With --short, also
TriviaQA and NQ: a greedy chat answer (≤ 24 tokens) scored by token F1 against the gold answer.

    .venv/bin/python bench/smollm2_mc_sample.py [--per-task 50] [--short [--skip-mc]] [--url http://127.0.0.1:8100]
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import re
import string
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "llmrouter" / "default_query_test.jsonl"
TASKS = ("mmlu", "arc_challenge", "commonsense_qa", "openbook_qa")
SHORT_TASKS = ("trivia_qa", "natural_qa")


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


def _words(text: str) -> list[str]:
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return [w for w in text.split() if w not in ("a", "an", "the")]


def f1(prediction: str, gold: str) -> float:
    """SQuAD-style token F1 (lowercase, no punctuation or articles)."""
    pred, ref = _words(prediction), _words(gold)
    common = sum(min(pred.count(w), ref.count(w)) for w in set(ref))
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def short_answer(url: str, question: str) -> str:
    body = json.dumps({"model": "smollm2", "max_tokens": 24, "temperature": 0, "messages": [
        {"role": "user", "content": f"{question.strip()}\nAnswer in a few words."}]}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return re.sub(r"\s+", " ", json.load(resp)["choices"][0]["message"]["content"] or "")


def _short_rows(url: str, rows: list[dict[str, Any]], per_task: int) -> None:
    print("\n| task | n | mean F1 | F1 ≥ 0.5 | gold answer in the reply |\n|---|---:|---:|---:|---:|")
    for task in SHORT_TASKS:
        picked = [r for r in rows if r["task_name"] == task][:per_task]
        replies = [(short_answer(url, r["query"]), str(r["ground_truth"])) for r in picked]
        scores = [f1(reply, gold) for reply, gold in replies]
        # F1 punishes a whole sentence around a right answer ("The capital of France is Paris."): 0.33
        within = sum(" ".join(_words(gold)) in " ".join(_words(reply)) for reply, gold in replies)
        print(f"| {task} | {len(scores)} | {sum(scores) / len(scores):.3f} | "
              f"{sum(s >= 0.5 for s in scores) / len(scores):.2f} | {within / len(replies):.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-task", type=int, default=50)
    parser.add_argument("--short", action="store_true", help="also TriviaQA and NQ, scored by F1")
    parser.add_argument("--skip-mc", action="store_true", help="only the short-answer tasks")
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
    try:
        if not args.skip_mc:
            print("| task | n | options | mean P(right) | accuracy (argmax) | chance |\n|---|---:|---:|---:|---:|---:|")
        for task in () if args.skip_mc else TASKS:
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
        if args.short:
            _short_rows(url, rows, args.per_task)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
