"""A 200 body is an answer only with its list of choices (or embeddings); anything else is named."""
from __future__ import annotations

from typing import Any

import pytest

from gateway.backends.answer_shape import shape_problem


@pytest.mark.parametrize("path, data", [
    ("chat/completions", {"choices": [{"message": {"content": "x"}}]}),
    ("completions", {"choices": [{"text": "x"}], "usage": {}}),
    ("embeddings", {"data": [{"embedding": [0.1]}]}),
])
def test_answers_pass(path: str, data: Any) -> None:
    assert shape_problem(path, data) is None


@pytest.mark.parametrize("path, data, words", [
    ("chat/completions", {}, "`choices`"),
    ("chat/completions", [], "JSON list"),
    ("chat/completions", {"choices": []}, "non-empty"),
    ("chat/completions", {"choices": {"0": {}}}, "`choices`"),
    ("completions", {"choices": ["x"]}, "object"),
    ("embeddings", {"object": "list"}, "`data`"),
    ("embeddings", {"choices": [{}]}, "`data`"),
])
def test_no_answer_is_named(path: str, data: Any, words: str) -> None:
    problem = shape_problem(path, data)
    assert problem is not None and words in problem
