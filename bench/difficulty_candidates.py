"""Benchmark: candidate difficulty features beside the shipped one, on the shipped held-out subjects
(bootstrap intervals), inside each held-out subject, and over ten other random subject splits — how
issue #16's options were chosen.

Every candidate predicts `strong_wins` (GPT-4 right, Mixtral wrong) on RouteLLM's MMLU labels, trained on
the subjects not held out. "per-token" in the output means it folds into the scorer's per-token table
(same hot-path cost as shipped); the others would need more work per request.

    .venv/bin/python bench/difficulty_candidates.py [--data ../shared/data/routing] [--splits 10] [--bag]
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from policies.offline import configure_offline_env
from policies.quality import metrics

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing"
OPTION = re.compile(r"^[A-D]\. ?(.*)$", re.M)
NEGATION = re.compile(r"\b(not|except|false|never|least|incorrect|none)\b", re.I)
Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (train mask, test mask) → test scores


def lexical(prompt: str) -> list[float]:
    """Cheap surface features: question and option lengths, digits, math symbols, negations."""
    options = [len(o) for o in OPTION.findall(prompt)] or [0]
    question = prompt.split("\nA.")[0]
    size = len(prompt) + 1
    return [np.log1p(len(question)), np.log1p(float(np.mean(options))), np.log1p(max(options)),
            float(np.std(options) / (np.mean(options) + 1)), sum(c.isdigit() for c in prompt) / size,
            sum(c in "=+-*/^<>()[]{}|" for c in prompt) / size, float(bool(NEGATION.search(question))),
            float("Statement 1" in prompt), float(question.count("\n"))]


def token_ids(prompts: tuple[str, ...], encode: Callable[[str], list[int]]) -> list[np.ndarray]:
    from policies.quality.difficulty import MAX_CHARS, WordTokens

    tokens = WordTokens(encode)
    return [np.array([i for w in p[:MAX_CHARS].split() for i in tokens.ids(w)], dtype=np.int64) for p in prompts]


def idf_mean(ids: list[np.ndarray], matrix: np.ndarray) -> np.ndarray:
    """IDF-weighted mean embedding (+ log #tokens): foldable as two per-token tables."""
    df = np.zeros(len(matrix))
    for row in ids:
        df[np.unique(row)] += 1
    idf = np.log((len(ids) + 1) / (df + 1)) + 1
    out = np.zeros((len(ids), matrix.shape[1] + 1))
    for r, row in enumerate(ids):
        if len(row):
            out[r, :-1] = (matrix[row] * idf[row, None]).sum(0) / idf[row].sum()
        out[r, -1] = np.log1p(len(row))
    return out


def bag(ids: list[np.ndarray], min_df: int = 20) -> np.ndarray:
    """Share of each (frequent) token id in the prompt: a per-token logistic regression."""
    df = np.bincount(np.concatenate([np.unique(r) for r in ids]))
    column = np.full(len(df), -1)
    vocab = np.nonzero(df >= min_df)[0]
    column[vocab] = np.arange(len(vocab))
    out = np.zeros((len(ids), len(vocab)), dtype=np.float32)
    for r, row in enumerate(ids):
        cols = column[row]
        np.add.at(out[r], cols[cols >= 0], 1.0 / max(len(row), 1))
    return out


def fit_adam(x: np.ndarray, y: np.ndarray, lam: float, iters: int = 300) -> tuple[np.ndarray, float]:
    """L2 logistic regression by full-batch Adam (too many columns for Newton); raw-space weights."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z, yf = (x - mu) / sd, y.astype(np.float32)
    w, m, v = (np.zeros(x.shape[1], dtype=np.float32) for _ in range(3))
    b = float(np.log(yf.mean() / (1 - yf.mean())))
    for t in range(1, iters + 1):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        g = z.T @ (p - yf) / len(yf) + lam * w
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w -= 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        b -= 0.05 * float((p - yf).mean())
    return w / sd, b - float((w * mu / sd).sum())


def candidates(prompts: tuple[str, ...], y: np.ndarray, ys: np.ndarray, with_bag: bool) -> dict[str, Predict]:
    from policies.quality.load import load_embeddings
    from policies.quality.train import _fit, _predict, featurize

    emb = load_embeddings()
    mean = featurize(prompts, emb)
    ids = token_ids(prompts, emb.encode)
    idf = idf_mean(ids, emb.matrix.astype(np.float64))
    lex = np.hstack([mean, np.array([lexical(p) for p in prompts])])
    unit = mean[:, :-1] / (np.linalg.norm(mean[:, :-1], axis=1, keepdims=True) + 1e-12)
    half = np.hstack([mean[:, :128], mean[:, -1:]])

    def logistic(x: np.ndarray, lam: float) -> Predict:
        return lambda tr, te: _predict(_fit(x[tr], y[tr], lam), x[te])

    def knn(tr: np.ndarray, te: np.ndarray, k: int = 50) -> np.ndarray:
        sim = unit[te] @ unit[tr].T
        return ys[tr][np.argpartition(-sim, k, axis=1)[:, :k]].mean(1)

    out: dict[str, Predict] = {
        "shipped: mean emb + log len, λ 10 (per-token)": logistic(mean, 10.0),
        "same, λ 1000 (per-token)": logistic(mean, 1000.0),
        "IDF-weighted mean + log len, λ 100 (per-token)": logistic(idf, 100.0),
        "first 128 dims + log len (per-token)": logistic(half, 10.0),
        "mean emb + 9 lexical features": logistic(lex, 10.0),
        "kNN, 50 nearest training prompts": knn,
    }
    if with_bag:
        tokens = bag(ids)

        def bag_predict(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            w, b = fit_adam(tokens[tr], y[tr], 1e-3)
            return tokens[te] @ w + b

        out["bag of token ids, LR (per-token)"] = bag_predict
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--splits", type=int, default=10, help="other random subject splits for the mean")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--bag", action="store_true", help="also the bag-of-token-ids LR (minutes)")
    args = parser.parse_args()
    configure_offline_env()
    from policies.quality import dataset
    from policies.quality.train import LABELS, NUM_TEST_SUBJECTS, split_subjects

    files = sorted((args.data / "routellm_mmlu").glob("mmlu_*.csv"))
    data, _ = dataset.drop(dataset.concat([dataset.read_csv(f) for f in files]),
                           dataset.read_contaminated(args.data / "routellm_mmlu_contaminated.jsonl"))
    groups, subjects = np.array(data.groups), sorted(set(data.groups))
    y = LABELS["strong_wins"](data.weak, data.strong)
    ys = data.strong.astype(np.float64) - data.weak
    length = np.array([len(p) for p in data.prompts], dtype=np.float64)
    routers = candidates(data.prompts, y, ys, args.bag)
    routers["prompt length only"] = lambda tr, te: length[te]
    fixed = np.isin(groups, list(split_subjects(subjects)[0]))
    others = [np.isin(groups, np.random.default_rng(s).permutation(subjects)[:NUM_TEST_SUBJECTS])
              for s in range(1, args.splits + 1)]
    held = {name: predict(~fixed, fixed) for name, predict in routers.items()}
    held["random (seed 0)"] = metrics.random_scores(int(fixed.sum()), 0)
    results = metrics.evaluate(data.weak[fixed], data.strong[fixed], held, resamples=args.resamples)
    print(f"| router | APGR [95% CI] | CPT(50%) [95% CI] | CPT(80%) | within-subject APGR | "
          f"APGR mean (min–max), {args.splits} other splits |")
    print("|---|---|---|---|---|---|")
    for r in results:
        spread = "–"
        if r.name in routers:
            vals = [_apgr(data.weak[m], data.strong[m], routers[r.name](~m, m)) for m in others]
            spread = f"{np.mean(vals):.3f} ({min(vals):.3f}–{max(vals):.3f})"
        within = _within(data.weak[fixed], data.strong[fixed], held[r.name], groups[fixed])
        print(f"| {r.name} | {r.apgr:.3f} [{r.apgr_ci[0]:.3f}, {r.apgr_ci[1]:.3f}] | {r.cpt50:.1%} "
              f"[{r.cpt50_ci[0]:.1%}, {r.cpt50_ci[1]:.1%}] | {r.cpt80:.1%} | {within:.3f} | {spread} |", flush=True)


def _apgr(weak: np.ndarray, strong: np.ndarray, scores: np.ndarray) -> float:
    share, quality = metrics.quality_curve(weak, strong, scores)
    return metrics.apgr(quality, share, float(weak.mean()), float(strong.mean()))


def _within(weak: np.ndarray, strong: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """APGR after each score is replaced by its rank inside its subject (0..1): only how the router
    orders one subject's prompts counts, not the between-subject differences that dominate the pooled
    figure (a router blind inside subjects gets ~0.5 here)."""
    ranks = np.zeros(len(scores))
    for g in set(groups):
        idx = np.nonzero(groups == g)[0]
        ranks[idx[np.argsort(scores[idx], kind="stable")]] = (np.arange(len(idx)) + 0.5) / len(idx)
    return _apgr(weak, strong, ranks)


if __name__ == "__main__":
    main()
