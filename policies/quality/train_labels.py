"""Retrain the difficulty model on a team's own labelled prompts: `python -m policies.quality.train
--labels FILE.csv [FILE.csv …] --out weights.json`. The CSVs are in RouteLLM's format (`prompt`, then
the weak and the strong model's correctness as True/False) — e.g. `hybridgw shadow export --format csv`
once a person or a judge filled the two columns. Same features, fit and file format as the shipped model."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from policies.quality import dataset, metrics
from policies.quality.load import load_embeddings
from policies.quality.train import LABELS, _check_scorer, _fit, featurize

MIN_ROWS = 4


def train_from_labels(paths: list[Path], out: Path, *, label: str, lam: float) -> dict[str, object]:
    """Fit on every labelled row (a team's data is small: no held-out split; `router eval` on a second
    file measures it), write the weights file and return what was written."""
    data = dataset.concat([dataset.read_csv(p) for p in paths])
    y = LABELS[label](data.weak, data.strong)
    if len(data.prompts) < MIN_ROWS or y.all() or not y.any():
        raise ValueError(f"need at least {MIN_ROWS} labelled rows with both outcomes of {label!r} "
                         f"(got {len(data.prompts)} rows, {int(y.sum())} positive)")
    emb = load_embeddings()
    x = featurize(data.prompts, emb)
    w, mu, sd = _fit(x, y, lam)
    raw = w[:-1] / sd
    bias = float(w[-1] - np.sum(w[:-1] * mu / sd))
    logits = x @ raw + bias
    share, quality = metrics.quality_curve(data.weak, data.strong, logits)
    apgr = metrics.apgr(quality, share, float(data.weak.mean()), float(data.strong.mean()))
    written: dict[str, object] = {
        "name": f"labels {', '.join(p.name for p in paths)} ({data.weak_name} vs {data.strong_name})",
        "label": label, "lambda": lam, "embedding": "wordllama 0.4.0.post1 dim=256 (bundled)",
        "weights": [float(v) for v in raw[:-1]], "length_weight": float(raw[-1]), "bias": bias,
        "rows": len(data.prompts), "in_sample_apgr": round(apgr, 4)}
    out.write_text(json.dumps(written, indent=1) + "\n", encoding="utf-8")
    _check_scorer(out, emb, data.prompts[:50], logits[:50])
    return written


def main_labels(args: argparse.Namespace) -> int:
    try:
        written = train_from_labels(list(args.labels), args.out, label=args.label, lam=args.lam)
    except ValueError as exc:
        print(f"train: {exc}")
        return 2
    print(f"{written['rows']} labelled prompts: in-sample APGR {written['in_sample_apgr']:.3f} "
          f"(label={args.label}, lambda={args.lam}); wrote {args.out}")
    return 0
