"""Token counts against OpenAI's published numbers, encoding choice, and the learned calibration."""
from __future__ import annotations

import pytest

from policies.tokens import Calibration, TokenCounter, encoding_name_for

# OpenAI cookbook "How to count tokens with tiktoken": these messages are 129 prompt tokens on
# gpt-4 / gpt-3.5-turbo (cl100k_base) and 124 on gpt-4o / gpt-4o-mini (o200k_base), as billed.
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    c = TokenCounter()
    c.warm()
    return c


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini", "o200k_base"), ("openai/gpt-4.1-mini", "o200k_base"),
    ("o3-mini", "o200k_base"), ("gpt-5", "o200k_base"), ("chatgpt-4o-latest", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"), ("claude-3-5-haiku-20241022", "cl100k_base"),
    ("smollm2", "cl100k_base"),
])
def test_encoding_by_family(model: str, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_chat_messages_match_openai_published_counts(counter: TokenCounter) -> None:
    assert counter.count_messages(COOKBOOK_MESSAGES, "cl100k_base") == 129
    assert counter.count_messages(COOKBOOK_MESSAGES, "o200k_base") == 124


def test_plain_text_and_special_tokens_in_user_text(counter: TokenCounter) -> None:
    assert counter.count_text("tiktoken is great!", "cl100k_base") == 6
    # Text that looks like a special token is counted as ordinary text, never raising.
    assert counter.count_text("<|endoftext|>", "cl100k_base") > 1


def test_completions_prompts(counter: TokenCounter) -> None:
    assert counter.count_prompt({"prompt": "tiktoken is great!"}, "cl100k_base") == 6
    assert counter.count_prompt({"prompt": ["tiktoken is great!", "tiktoken is great!"]}, "cl100k_base") == 12
    assert counter.count_prompt({"prompt": [1, 2, 3, 4]}, "cl100k_base") == 4


def test_content_parts_images_and_tools_add_tokens(counter: TokenCounter) -> None:
    text_only = {"messages": [{"role": "user", "content": "tiktoken is great!"}]}
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "tiktoken is great!"}]}]}
    assert counter.count_prompt(text_only, "cl100k_base") == counter.count_prompt(parts, "cl100k_base") == 6 + 3 + 1 + 3
    image = {"type": "image_url", "image_url": {"url": "data:,", "detail": "low"}}
    with_image = {"messages": [{"role": "user", "content": [{"type": "text", "text": "tiktoken is great!"}, image]}]}
    assert counter.count_prompt(with_image, "cl100k_base") == 13 + 85
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    assert counter.count_prompt({**text_only, "tools": tools}, "cl100k_base") > 13


def test_malformed_messages_do_not_raise(counter: TokenCounter) -> None:
    assert counter.count_prompt({"messages": "hello"}, "cl100k_base") == 3
    assert counter.count_prompt({"messages": ["hello", {"role": "user", "content": None}]}, "cl100k_base") == 3 + 3 + 1


def test_calibration_learns_the_engine_ratio_and_is_clamped() -> None:
    cal = Calibration(alpha=0.5)
    assert cal.apply("local/smollm2", 100) == 100  # nothing learned: our count as is
    cal.observe("local/smollm2", counted=100, reported=120)
    assert cal.ratio("local/smollm2") == pytest.approx(1.2)  # first sample taken as is
    cal.observe("local/smollm2", counted=100, reported=140)
    assert cal.ratio("local/smollm2") == pytest.approx(1.3)  # EWMA
    assert cal.apply("local/smollm2", 1000) == 1300
    cal.observe("other", counted=10, reported=1000)
    assert cal.ratio("other") == 4.0  # a wild sample is clamped
    cal.observe("ignored", counted=0, reported=10)
    assert cal.ratio("ignored") == 1.0
