"""RouteLLM's router metrics on correctness arrays whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from policies.quality import metrics


def _labels(n: int = 2000, weak_rate: float = 0.6, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weak = rng.random(n) < weak_rate
    return weak, np.ones(n, dtype=bool)  # strong always right: the gap is exactly the weak model's misses


def test_curve_runs_from_all_weak_to_all_strong() -> None:
    weak, strong = _labels()
    share, quality = metrics.quality_curve(weak, strong, np.arange(len(weak), dtype=float))
    assert share[0] == 0.0 and share[-1] == 1.0
    assert quality[0] == pytest.approx(weak.mean()) and quality[-1] == pytest.approx(strong.mean())


def test_oracle_recovers_the_gap_at_once_and_random_is_a_half() -> None:
    weak, strong = _labels(weak_rate=0.98)  # a 2% gap: the oracle's curve is 1.0 after 2% of calls
    results = {r.name: r for r in metrics.evaluate(weak, strong, {
        "oracle": metrics.oracle_scores(weak, strong), "random": metrics.random_scores(len(weak), 0),
        "worst": -metrics.oracle_scores(weak, strong)}, resamples=50)}
    assert results["oracle"].apgr == pytest.approx(1.0, abs=0.015)
    assert results["oracle"].cpt50 == pytest.approx((~weak).mean() / 2, abs=1 / len(weak))
    assert results["random"].apgr_ci[0] < 0.5 < results["random"].apgr_ci[1]
    assert 0.35 < results["random"].apgr < 0.65
    assert results["worst"].apgr < 0.05 and results["worst"].cpt80 > 0.95


def test_cpt_reads_the_share_where_the_gap_is_recovered() -> None:
    weak = np.array([True, False, False, True])
    strong = np.array([True, True, True, True])
    scores = np.array([0.0, 0.9, 0.8, 0.1])  # the two weak misses first
    share, quality = metrics.quality_curve(weak, strong, scores)
    assert list(quality) == [0.5, 0.75, 1.0, 1.0, 1.0]
    assert metrics.cpt(quality, share, 0.5, 1.0, 0.5) == 0.25
    assert metrics.cpt(quality, share, 0.5, 1.0, 0.8) == 0.5
    assert metrics.apgr(quality, share, 0.5, 1.0) == pytest.approx((0.625 + 0.875 + 1 + 1) / 4 * 2 - 1)


def test_no_gap_means_undefined_not_a_crash() -> None:
    same = np.array([True, False, True])
    (result,) = metrics.evaluate(same, same, {"random": metrics.random_scores(3)}, resamples=5)
    assert np.isnan(result.apgr) and np.isnan(result.cpt50)
