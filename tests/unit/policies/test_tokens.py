"""Token counts against OpenAI's published numbers, encoding choice, and the learned calibration."""
from __future__ import annotations

import pytest

from policies.calibration import Calibration
from policies.tokens import TokenCounter, encoding_name_for

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


def test_calibration_learns_the_template_offset_and_the_text_ratio() -> None:
    cal = Calibration()
    assert cal.apply("local/smollm2", 100) == 100  # nothing learned: our count as is
    # Figures from SmolLM2 (tiny-random): its chat template adds a system prompt; text is ~1.13×.
    cal.observe("local/smollm2", counted=9, reported=32)
    assert cal.apply("local/smollm2", 9) == 32
    assert cal.apply("local/smollm2", 1524) == 1547  # one short prompt: offset 23, slope still 1
    cal.observe("local/smollm2", counted=1524, reported=1725)
    cal.observe("local/smollm2", counted=393, reported=459)
    offset, slope = cal.line("local/smollm2")
    assert 1.08 < slope < 1.16 and 15 < offset < 35
    assert abs(cal.apply("local/smollm2", 1524) - 1725) <= 20  # not 3.5 × 1524 as a ratio would say
    assert abs(cal.apply("local/smollm2", 17) - 40) <= 5


def test_calibration_slope_is_clamped_and_bad_samples_ignored() -> None:
    cal = Calibration(high=4.0)
    cal.observe("other", counted=10, reported=10)
    cal.observe("other", counted=1000, reported=100000)
    assert cal.ratio("other") == 4.0
    cal.observe("ignored", counted=0, reported=10)
    cal.observe("ignored", counted=10, reported=0)
    assert cal.apply("ignored", 10) == 10 and cal.line("ignored") == (0.0, 1.0)


LONG_TEXTS = [
    "The gateway counts tokens before the call. " * 40,
    "<|endoftext|> looks special but is user text; <|im_start|>user\n" * 20,
    "   spaces\t\ttabs\n\n\nnewlines   " * 40 + "   ",
    "naïve café 東京 🚀🚀 Привет مرحبا " * 30,
    "x" * 5000,
    "def f(x):\n    return {'a': [1, 2, 3]}\n" * 30,
    "unpaired \ud800 surrogate " * 40,
]


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_long_texts_count_exactly_what_encode_ordinary_gives(counter: TokenCounter, encoding: str) -> None:
    enc = counter.encoding(encoding)
    for text in LONG_TEXTS:  # long enough for the token-buffer path
        assert counter.count_text(text, encoding) == len(enc.encode_ordinary(text)), text[:40]
        body = {"messages": [{"role": "system", "content": text}, {"role": "user", "content": text[:100]}]}
        expected = 3 + 3 + 1 + len(enc.encode_ordinary(text)) + 3 + 1 + len(enc.encode_ordinary(text[:100]))
        assert counter.count_prompt(body, encoding) == expected
