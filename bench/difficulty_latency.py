"""Benchmark: what the difficulty score adds to a request — scoring a 1,000-token prompt with the
shipped model (policies.quality) — in three cache states, and the nearest semantic category, beside
wordllama's own `embed` (full tokenization of the prompt) as the peer in the same run.

Prompts: distinct 1,000-token (o200k_base) prompts built from RouteLLM's MMLU questions. "warm": the
prompt was scored before (steady state for repeated templates); "new prompt, known words": unseen
prompts from held-out subjects after the training subjects' words were cached (a service that has run
a while); "cold": a fresh scorer, every word tokenized (the first requests after start).

    .venv/bin/python bench/difficulty_latency.py [--data ../shared/data/routing] [--prompts 200]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from policies.offline import configure_offline_env

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing"


def _prompts(files: list[Path], count: int, tokens: int) -> list[str]:
    from policies.quality import dataset
    from policies.tokens import TokenCounter

    counter = TokenCounter()
    questions = list(dataset.concat([dataset.read_csv(f) for f in files]).prompts)
    out, text = [], ""
    for question in questions:
        text += question + "\n\n"
        if counter.count_text(text, "o200k_base") >= tokens:
            out.append(text)
            text = ""
            if len(out) == count:
                break
    return out


def _time_each(fn: Callable[[str], object], prompts: list[str]) -> list[float]:
    samples = []
    for prompt in prompts:
        t0 = time.perf_counter_ns()
        fn(prompt)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


def _row(name: str, samples: list[float]) -> dict[str, object]:
    ordered = sorted(samples)
    return {"case": name, "n": len(samples), "p50_us": round(statistics.median(ordered), 1),
            "p99_us": round(ordered[int(0.99 * (len(ordered) - 1))], 1)}


def _category_times(emb: object, prompts: list[str]) -> list[float]:
    from policies.loader import load_policy_file
    from policies.quality.categories import CategoryIndex
    from policies.quality.difficulty import WordTokens

    example = Path(__file__).resolve().parents[1] / "policies" / "examples" / "semantic_routes.yaml"
    categories = load_policy_file(example, {"OPENAI_API_KEY": "x"}).policy.categories
    index = CategoryIndex(categories, emb.matrix, WordTokens(emb.encode))  # type: ignore[attr-defined]
    _time_each(index.nearest, prompts)  # first sight of the words
    return _time_each(index.nearest, prompts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=1000)
    args = parser.parse_args()
    configure_offline_env()
    from policies.quality.load import load_embeddings, load_scorer, read_weights

    held_out = set(read_weights()["test_subjects"])
    files = sorted((args.data / "routellm_mmlu").glob("mmlu_*.csv"))
    test = _prompts([f for f in files if f.stem in held_out], args.prompts, args.tokens)
    train = _prompts([f for f in files if f.stem not in held_out], 10_000, args.tokens)
    emb = load_embeddings()
    rows = [_row("cold: fresh scorer, first sight of every word", _time_each(load_scorer(embeddings=emb).score_text,
                                                                            test))]
    scorer = load_scorer(embeddings=emb)
    for prompt in train:
        scorer.score_text(prompt)
    rows.append(_row("new prompt, known words (training subjects cached)", _time_each(scorer.score_text, test)))
    rows.append(_row("warm: prompt scored before", _time_each(scorer.score_text, test)))
    rows.append(_row("category, warm (semantic_routes.yaml: 3 categories)", _category_times(emb, test)))
    import wordllama

    peer = wordllama.WordLlama.load(dim=256, cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    rows.append(_row("peer: wordllama embed (full tokenization + mean)", _time_each(peer.embed, test)))
    for row in rows:
        print(json.dumps(row))
    print("\n| case | p50 µs | p99 µs |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['case']} | {row['p50_us']} | {row['p99_us']} |")


if __name__ == "__main__":
    main()
