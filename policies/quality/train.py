"""Train the shipped difficulty model: `python -m policies.quality.train [--data DIR] [--out FILE]`.

RouteLLM's MMLU labels (Mixtral-8x7B vs GPT-4), contaminated prompts dropped, WHOLE subjects held out
for test (and others for calibration); features = the mean wordllama embedding of the prompt's words
(exactly what the scorer folds into per-token scores) + log(#tokens); an L2 logistic regression fitted
by Newton's method in numpy. Regularisation and label are chosen on the calibration subjects.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from policies.quality import dataset, metrics
from policies.quality.difficulty import MAX_CHARS, WordTokens
from policies.quality.load import WEIGHTS_FILE, Embeddings, load_embeddings, load_scorer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "routing"
SEED = 16
NUM_TEST_SUBJECTS, NUM_CAL_SUBJECTS = 12, 9
LAMBDAS = (0.1, 1.0, 10.0, 100.0)
LABELS = {"weak_wrong": lambda w, s: ~w, "strong_wins": lambda w, s: s & ~w}


def featurize(prompts: tuple[str, ...], emb: Embeddings) -> np.ndarray:
    """(n, 257): mean embedding of the prompt's tokens (words encoded one by one, as the scorer does)
    and log1p(#tokens)."""
    tokens = WordTokens(emb.encode)
    out = np.zeros((len(prompts), emb.matrix.shape[1] + 1))
    for row, prompt in enumerate(prompts):
        flat = [i for w in prompt[:MAX_CHARS].split() for i in tokens.ids(w)]
        if flat:
            out[row, :-1] = emb.matrix[flat].astype(np.float64).mean(axis=0)
        out[row, -1] = np.log1p(len(flat))
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, lam: float, iters: int = 25) -> np.ndarray:
    """Weights (d+1, last = intercept) of an L2-penalised logistic regression (intercept unpenalised)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    penalty = np.full(xb.shape[1], lam)
    penalty[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def split_subjects(subjects: list[str]) -> tuple[set[str], set[str]]:
    order = np.random.default_rng(SEED).permutation(sorted(subjects))
    return set(order[:NUM_TEST_SUBJECTS]), set(order[NUM_TEST_SUBJECTS:NUM_TEST_SUBJECTS + NUM_CAL_SUBJECTS])


def _apgr(data: dataset.Labelled, scores: np.ndarray) -> float:
    share, quality = metrics.quality_curve(data.weak, data.strong, scores)
    return metrics.apgr(quality, share, float(data.weak.mean()), float(data.strong.mean()))


def _fit(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    return fit_logistic((x - mu) / sd, y.astype(np.float64), lam), mu, sd


def _predict(model: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    w, mu, sd = model
    return ((x - mu) / sd) @ w[:-1] + w[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policies.quality.train", description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared routing data folder")
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    parser.add_argument("--cv", type=int, default=0, metavar="N",
                        help="also report held-out APGR over N other random subject splits (vs length only)")
    parser.add_argument("--labels", type=Path, nargs="+", metavar="CSV",
                        help="train on these RouteLLM-format CSVs instead (e.g. labelled shadow pairs)")
    parser.add_argument("--label", choices=sorted(LABELS), default="weak_wrong", help="with --labels")
    parser.add_argument("--lambda", dest="lam", type=float, default=1.0, help="with --labels: L2 penalty")
    args = parser.parse_args(argv)
    if args.labels:
        from policies.quality.train_labels import main_labels

        return main_labels(args)
    files = sorted((args.data / "routellm_mmlu").glob("mmlu_*.csv"))
    if not files:
        print(f"no routellm_mmlu/mmlu_*.csv under {args.data}", file=sys.stderr)
        return 2
    data, dropped = dataset.drop(dataset.concat([dataset.read_csv(f) for f in files]),
                                 dataset.read_contaminated(args.data / "routellm_mmlu_contaminated.jsonl"))
    test_subjects, cal_subjects = split_subjects(sorted(set(data.groups)))
    groups = np.array(data.groups)
    is_test, is_cal = np.isin(groups, list(test_subjects)), np.isin(groups, list(cal_subjects))
    is_train = ~is_test & ~is_cal
    emb = load_embeddings()
    x = featurize(data.prompts, emb)
    cal = _subset(data, is_cal)
    best = max((_apgr(cal, _predict(_fit(x[is_train], LABELS[label](data.weak, data.strong)[is_train], lam),
                                      x[is_cal])), label, lam) for label in LABELS for lam in LAMBDAS)
    print(f"calibration subjects: APGR {best[0]:.3f} with label={best[1]} lambda={best[2]}")
    fit_rows = is_train | is_cal
    w, mu, sd = _fit(x[fit_rows], LABELS[best[1]](data.weak, data.strong)[fit_rows], best[2])
    raw = w[:-1] / sd
    bias = float(w[-1] - np.sum(w[:-1] * mu / sd))
    test_apgr = _apgr(_subset(data, is_test), x[is_test] @ raw + bias)
    print(f"held-out subjects ({int(is_test.sum())} prompts): APGR {test_apgr:.3f}; dropped {dropped} contaminated")
    out = {"name": f"routellm-mmlu {data.weak_name} vs {data.strong_name}", "label": best[1], "lambda": best[2],
           "embedding": "wordllama 0.4.0.post1 dim=256 (bundled)", "weights": [float(v) for v in raw[:-1]],
           "length_weight": float(raw[-1]), "bias": bias, "test_subjects": sorted(test_subjects),
           "calibration_subjects": sorted(cal_subjects), "seed": SEED, "contaminated_dropped": dropped,
           "held_out_apgr": round(test_apgr, 4)}
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    _check_scorer(args.out, emb, data.prompts[:50], x[:50] @ raw + bias)
    print(f"wrote {args.out}")
    if args.cv:
        _cross_validate(data, x, best[1], best[2], args.cv)
    return 0


def _cross_validate(data: dataset.Labelled, x: np.ndarray, label: str, lam: float, splits: int) -> None:
    """Held-out APGR on other random choices of the test subjects: how much the one split's figure
    owes to which subjects it drew."""
    groups, subjects = np.array(data.groups), sorted(set(data.groups))
    y = LABELS[label](data.weak, data.strong)
    ours, length = [], []
    for seed in range(1, splits + 1):
        test = np.isin(groups, np.random.default_rng(seed).permutation(subjects)[:NUM_TEST_SUBJECTS])
        held = _subset(data, test)
        ours.append(_apgr(held, _predict(_fit(x[~test], y[~test], lam), x[test])))
        length.append(_apgr(held, x[test, -1]))
        print(f"split {seed}: APGR difficulty {ours[-1]:.3f}, length only {length[-1]:.3f}")
    print(f"mean over {splits} splits: difficulty {np.mean(ours):.3f} (min {min(ours):.3f}, max {max(ours):.3f}), "
          f"length only {np.mean(length):.3f}")


def _subset(data: dataset.Labelled, mask: np.ndarray) -> dataset.Labelled:
    idx = np.nonzero(mask)[0]
    return dataset.Labelled(tuple(data.prompts[i] for i in idx), data.weak[idx], data.strong[idx],
                            data.weak_name, data.strong_name, tuple(data.groups[i] for i in idx))


def _check_scorer(path: Path, emb: Embeddings, prompts: tuple[str, ...], logits: np.ndarray) -> None:
    """The shipped scorer (folded per-token scores) must give what was trained (mean embedding · w)."""
    scorer = load_scorer(path, emb)
    got = np.array([scorer.score_text(p) for p in prompts])
    want = 1.0 / (1.0 + np.exp(-logits))
    if not np.allclose(got, want, atol=1e-6):
        raise SystemExit(f"scorer disagrees with training: max diff {np.abs(got - want).max():.3g}")


if __name__ == "__main__":
    sys.exit(main())
