"""Workloads: prompts of exactly the asked token count, presets, tenants, teams and the bodies sent."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from observability.bench import workload
from observability.bench.lengths import Fixed, Uniform
from observability.bench.prompts import PromptBuilder, TokenizerMismatch
from observability.bench.workload import Team, WorkloadSpec, build_plans, request_body


@pytest.fixture(scope="module", params=["cl100k_base", "o200k_base"])
def builder(request: pytest.FixtureRequest) -> PromptBuilder:
    return PromptBuilder.tiktoken(request.param)


def test_prompts_hit_their_target_token_count_exactly(builder: PromptBuilder) -> None:
    rng = random.Random(3)
    for n in (1, 2, 7, 64, 511, 2048, 4097):
        assert builder.count(builder.text(n, rng)) == n


def test_plans_count_prefix_and_tail_exactly(builder: PromptBuilder) -> None:
    spec = WorkloadSpec(isl=Uniform(300, 900), osl=Fixed(32), tenants=3, prefix_tokens=256, seed=1)
    plans = build_plans(spec, 60, builder)
    for p in plans:
        assert builder.count(p.prefix + p.tail) == p.isl
        assert builder.count(p.prefix) == 256 and p.osl == 32
    prefixes = {p.prefix for p in plans}
    assert len(prefixes) == 3  # three tenants share three system prompts
    assert len({p.tail for p in plans}) == 60  # and every request's own text differs


def test_mixed_preset_draws_all_four_patterns_with_their_lengths(builder: PromptBuilder) -> None:
    plans = build_plans(WorkloadSpec(preset="mixed", length_scale=0.1, seed=2), 200, builder)
    by = Counter(p.pattern for p in plans)
    assert set(by) == set(workload.PATTERNS) and min(by.values()) > 25
    long_in = [p.isl for p in plans if p.pattern.startswith("long-in")]
    short_in = [p.isl for p in plans if p.pattern.startswith("short-in")]
    assert min(long_in) > max(short_in)  # 2000 ± 200 vs 200 ± 20, scaled by 0.1


def test_same_seed_same_workload_and_teams_take_turns(builder: PromptBuilder) -> None:
    teams = (Team("a", "ka"), Team("b", "kb"))
    spec = WorkloadSpec(preset="short-in-short-out", teams=teams, length_scale=0.1, seed=9)
    one, two = build_plans(spec, 6, builder), build_plans(spec, 6, builder)
    assert list(one) == list(two)
    assert one[3] == build_plans(spec, 50, builder)[3]  # request i does not depend on how many are built
    assert list(one[2:5]) == list(one)[2:5] and len(one[4:]) == 2
    assert [p.team.name for p in one] == ["a", "b", "a", "b", "a", "b"]
    with pytest.raises(ValueError, match="unknown preset"):
        build_plans(WorkloadSpec(preset="nope"), 1, builder)


def test_request_bodies_for_chat_and_completions(builder: PromptBuilder) -> None:
    plan = build_plans(WorkloadSpec(isl=Fixed(40), osl=Fixed(8), tenants=1, prefix_tokens=16), 1, builder)[0]
    chat = orjson.loads(request_body(plan, "m", "chat", ignore_eos=True))
    assert chat["messages"][0] == {"role": "system", "content": plan.prefix}
    assert chat["messages"][1]["content"] == plan.tail
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert (chat["max_tokens"], chat["min_tokens"], chat["ignore_eos"]) == (8, 8, True)
    plain = orjson.loads(request_body(plan, "m", "completions", ignore_eos=False))
    assert plain["prompt"] == plan.prefix + plan.tail and "ignore_eos" not in plain


def test_a_tokenizer_that_does_not_count_words_additively_is_refused() -> None:
    with pytest.raises(TokenizerMismatch, match="too few single-token words"):
        PromptBuilder("chars", len)  # every character a token: no word is one token
    # one token per word in short texts, but it merges somewhere in a long one
    with pytest.raises(TokenizerMismatch, match="merges across spaces"):
        PromptBuilder("merging", lambda text: len(text.split()) - (len(text.split()) > 100))
    words = PromptBuilder("words", lambda text: len(text.split()))  # a whitespace tokenizer is fine
    assert words.count(words.text(77, random.Random(1))) == 77
