"""The difficulty score: pure scoring over hand-built per-token scores, and the shipped model."""
from __future__ import annotations

import math

import numpy as np
import pytest

from policies.quality.difficulty import DifficultyScorer, DifficultyWeights, prompt_text, sigmoid
from policies.quality.load import load_scorer, read_weights

VOCAB = {"easy": [1], "hard": [2], "proof": [2, 3]}  # "proof" is two tokens


def _encode(piece: str) -> list[int]:
    return VOCAB.get(piece, [0])


def _scorer(length_weight: float = 0.0) -> DifficultyScorer:
    return DifficultyScorer(DifficultyWeights(np.array([0.0, -2.0, 2.0, 1.0]), 0.5, length_weight), _encode)


def test_score_is_the_logistic_of_the_mean_token_score() -> None:
    scorer = _scorer()
    assert scorer.score_text("easy easy") == pytest.approx(sigmoid(-2.0 + 0.5))
    assert scorer.score_text("hard proof") == pytest.approx(sigmoid((2 + 2 + 1) / 3 + 0.5))
    assert scorer.score_text("") == pytest.approx(sigmoid(0.5))
    assert scorer.score_text("hard") > scorer.score_text("easy")


def test_length_term_and_a_warm_cache_give_the_same_score() -> None:
    scorer = _scorer(length_weight=0.25)
    cold = scorer.score_text("hard easy unknown")
    assert cold == pytest.approx(sigmoid((2 - 2 + 0) / 3 + 0.5 + 0.25 * math.log1p(3)))
    assert scorer.score_text("hard easy unknown") == cold  # now from the word cache
    assert scorer.score_text("unknown hard new") == pytest.approx(sigmoid(2 / 3 + 0.5 + 0.25 * math.log1p(3)))


def test_prompt_text_is_the_last_user_message() -> None:
    body = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
                         {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": [{"type": "text", "text": "prove it"},
                                                      {"type": "image_url", "image_url": {"url": "x"}}]}]}
    assert prompt_text(body) == "prove it"
    assert prompt_text({"prompt": "complete me"}) == "complete me"
    assert prompt_text({"messages": [{"role": "system", "content": "only system"}]}) == "only system"
    assert prompt_text({"messages": "not a list", "prompt": 3}) == ""


def test_shipped_model_loads_and_is_deterministic() -> None:
    data = read_weights()
    assert len(data["test_subjects"]) >= 10 and not set(data["test_subjects"]) & set(data["calibration_subjects"])
    first, second = load_scorer(), load_scorer()
    hard = ("Let f(x) = x^3 - 3x + 1. Find the number of real roots of f(f(x)) = 0.\n"
            "A. 3\nB. 5\nC. 7\nD. 9\nAnswer:")
    easy = "hello, how are you today?"
    assert first.score_text(hard) == second.score_text(hard)
    assert 0.0 < first.score_text(easy) < 1.0 and 0.0 < first.score_text(hard) < 1.0
    assert first.score_text(easy) != first.score_text(hard)
    assert first.score_body({"messages": [{"role": "user", "content": hard}]}) == first.score_text(hard)


def test_shipped_model_scores_any_text_a_client_can_send() -> None:
    scorer = load_scorer()
    for text in ("bad \ud800 surrogate", "nul \x00 and \u200b zero-width", "emoji 🤖🤖", "x" * 100_000):
        assert 0.0 < scorer.score_text(text) < 1.0
