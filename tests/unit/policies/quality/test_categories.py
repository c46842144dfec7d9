"""Semantic routes: the nearest category by example prompts, as a request fact in `when:`."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import policies
from policies.calibration import Calibration
from policies.compiled import compile_policy
from policies.decide import decide
from policies.errors import PolicyError
from policies.facts import build_facts
from policies.loader import load_policy_file
from policies.quality.categories import CategoryIndex
from policies.quality.difficulty import WordTokens
from policies.quality.lazy import LazyQuality
from policies.tokens import TokenCounter

from ..support import compiled, engine, facts, live

EXAMPLE = Path(policies.__file__).parent / "examples" / "semantic_routes.yaml"
IDS = {"sum": 1, "add": 1, "cat": 2, "dog": 2, "plus": 3, "kitten": 4}
MATRIX = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [0.1, 0.9, 0.2]], dtype=np.float32)


def _index() -> CategoryIndex:
    return CategoryIndex({"math": ["sum add"], "pets": ["cat dog"]}, MATRIX, WordTokens(lambda p: [IDS.get(p, 0)]))


def test_nearest_category_on_hand_built_embeddings() -> None:
    index = _index()
    assert index.nearest("plus plus, sum") == "math"
    assert index.nearest("kitten!") == "pets"
    assert index.nearest("   ") is None
    scores = index.scores("plus")
    assert scores[0] == pytest.approx(0.9) and scores[1] == pytest.approx(0.1)


@pytest.fixture(scope="module")
def quality() -> LazyQuality:
    return LazyQuality()


@pytest.mark.parametrize("prompt, want", [
    ("My Python script throws a TypeError when I call this function, how do I fix it?", "code"),
    ("Can my landlord evict me without notice under the lease agreement?", "legal"),
    ("Hello! What's a good movie to watch this weekend?", "chitchat"),
])
def test_example_policy_categories_with_the_shipped_embeddings(quality: LazyQuality, prompt: str, want: str) -> None:
    policy = load_policy_file(EXAMPLE, {"OPENAI_API_KEY": "sk-test"}).policy
    assert quality.category({"messages": [{"role": "user", "content": prompt}]}, policy.categories) == want


def test_category_in_when_routes_and_is_computed_only_when_used() -> None:
    loaded = load_policy_file(EXAMPLE, {"OPENAI_API_KEY": "sk-test"})
    policy = compile_policy(loaded.policy, {})
    assert policy.uses_category and not policy.uses_difficulty
    state = live({"local": engine(free=5)})
    legal = decide(policy, replace(facts(blocks={"local": 20}), category="legal"), state)
    assert [t.backend for t in legal.targets] == ["local"] and "category == 'legal' (legal)" in legal.reason
    code = decide(policy, replace(facts(blocks={"local": 20}), category="code"), state)
    assert [t.backend for t in code.targets] == ["openai", "local"]
    calls: list[object] = []
    plain = compiled(EXAMPLE.read_text().split("rules:")[0])
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    made = build_facts(plain, body, "default", state, counter=TokenCounter(), calibration=Calibration(),
                       category=lambda b, c: calls.append(b) or "code")
    assert made.category is None and calls == []  # categories defined, but no rule uses them


def test_unknown_category_and_empty_examples_are_refused_at_load() -> None:
    head = EXAMPLE.read_text().split("rules:")[0]
    with pytest.raises(PolicyError, match="unknown category 'finance'"):
        compiled(head + "rules:\n  - {name: r, when: {category: finance}, route: [local]}\n")
    with pytest.raises(PolicyError, match="at least one non-empty example"):
        compiled(head.replace("categories:\n", "categories:\n  empty: ['  ']\n"))


def test_warm_builds_the_category_index_before_the_first_request() -> None:
    quality = LazyQuality()
    categories = {"code": ["Fix my Python bug."], "other": ["Hello!"]}
    quality.warm(categories)
    assert len(quality._indexes) == 1  # built at start / reload, not by the first request
    assert quality.category({"messages": [{"role": "user", "content": "my Python code crashes"}]}, categories) == "code"
    assert len(quality._indexes) == 1
