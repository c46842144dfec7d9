"""How routers are compared, as RouteLLM defines it (routellm/evals/evaluate.py): sweep the threshold,
plot quality against the share of calls sent to the strong model; APGR = the area under the "share of
the quality gap recovered" curve (random = 0.5); CPT(x) = the strong share needed to recover x of the
gap. Pure numpy over correctness arrays and router scores (higher score = send to strong first)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RouterResult:
    name: str
    apgr: float
    cpt50: float  # share of strong calls (0..1) to recover 50% of the gap; nan when never reached
    cpt80: float
    apgr_ci: tuple[float, float]  # bootstrap percentile interval (95%)
    cpt50_ci: tuple[float, float]
    cpt80_ci: tuple[float, float]
    share: np.ndarray  # (n+1,) share of calls to strong, 0..1
    quality: np.ndarray  # (n+1,) mean correctness at that share


def quality_curve(weak: np.ndarray, strong: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quality when the k highest-scored prompts go to strong, for k = 0..n (ties: stable order)."""
    n = len(weak)
    order = np.argsort(-scores, kind="stable")
    gain = np.concatenate(([0.0], np.cumsum(strong[order].astype(np.float64) - weak[order])))
    return np.arange(n + 1) / n, (weak.sum() + gain) / n


def apgr(quality: np.ndarray, share: np.ndarray, weak_acc: float, strong_acc: float) -> float:
    gap = strong_acc - weak_acc
    if gap <= 0:
        return float("nan")
    area = float(np.sum((quality[1:] + quality[:-1]) * np.diff(share)) / 2)  # trapezoid rule
    return (area - weak_acc) / gap


def cpt(quality: np.ndarray, share: np.ndarray, weak_acc: float, strong_acc: float, recovered: float) -> float:
    gap = strong_acc - weak_acc
    if gap <= 0:
        return float("nan")
    reached = np.nonzero(quality >= weak_acc + recovered * gap - 1e-12)[0]
    return float(share[reached[0]]) if len(reached) else float("nan")


def _point(weak: np.ndarray, strong: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    share, quality = quality_curve(weak, strong, scores)
    w, s = float(weak.mean()), float(strong.mean())
    return apgr(quality, share, w, s), cpt(quality, share, w, s, 0.5), cpt(quality, share, w, s, 0.8)


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def evaluate(weak: np.ndarray, strong: np.ndarray, routers: Mapping[str, np.ndarray], *,
             resamples: int = 200, seed: int = 0) -> list[RouterResult]:
    """Each router's curve and metrics, with bootstrap intervals over the prompts (same resamples
    for every router, so their intervals are comparable)."""
    weak, strong = np.asarray(weak, dtype=bool), np.asarray(strong, dtype=bool)
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, len(weak), len(weak)) for _ in range(resamples)]
    out = []
    for name, scores in routers.items():
        scores = np.asarray(scores, dtype=np.float64)
        share, quality = quality_curve(weak, strong, scores)
        a, c50, c80 = _point(weak, strong, scores)
        boot = np.array([_point(weak[i], strong[i], scores[i]) for i in samples]).reshape(-1, 3)
        out.append(RouterResult(name, a, c50, c80, _interval(boot[:, 0]), _interval(boot[:, 1]),
                                _interval(boot[:, 2]), share, quality))
    return out


def oracle_scores(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Strong first where only strong is right, last where only weak is right."""
    return np.asarray(strong, dtype=np.float64) - np.asarray(weak, dtype=np.float64)


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(n)
