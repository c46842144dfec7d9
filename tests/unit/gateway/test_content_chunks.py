"""Which chunks count as tokens for TTFT/ITL (OpenAI's role-only opener does not), and which
upstream usage numbers the gateway believes."""
from __future__ import annotations

import pytest

from gateway.stream_tally import MAX_SANE_TOKENS, StreamTally, upstream_counts, usage_is_insane
from gateway.timing import RequestClock, summarize

ROLE = b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
ROLE_NULL = b'{"choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}]}'
TEXT = b'{"choices":[{"index":0,"delta":{"content":"Paris"},"finish_reason":null}]}'
TOOL = (b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function",'
        b'"function":{"name":"f","arguments":""}}]},"finish_reason":null}]}')
REFUSAL = b'{"choices":[{"index":0,"delta":{"refusal":"I cannot"},"finish_reason":null}]}'
LEGACY = b'{"choices":[{"index":0,"text":"tok","finish_reason":null}]}'
LEGACY_EMPTY = b'{"choices":[{"index":0,"text":"","finish_reason":null}]}'


@pytest.mark.parametrize("payload", [ROLE, ROLE_NULL, LEGACY_EMPTY])
def test_a_chunk_without_output_is_no_token(payload: bytes) -> None:
    assert StreamTally(client_wants_usage=True).accept(payload) == (payload, False)


@pytest.mark.parametrize("payload", [TEXT, TOOL, REFUSAL, LEGACY])
def test_text_tool_call_and_refusal_are_tokens(payload: bytes) -> None:
    assert StreamTally(client_wants_usage=True).accept(payload) == (payload, True)


def test_ttft_is_the_first_content_chunk_and_the_role_wait_is_no_gap() -> None:
    """What the relay does: the role chunk at 0.05 s marks the first byte only; content at 2.0 s is TTFT."""
    clock, tally = RequestClock(arrival=0.0), StreamTally(client_wants_usage=False)
    clock.mark_upstream_sent(0.01)
    for at, payload in ((0.05, ROLE), (2.0, TEXT), (2.1, TEXT), (2.3, TEXT)):
        clock.mark_first_byte(at)
        if tally.accept(payload)[1]:
            clock.mark_chunk(at)
    stats = summarize(clock)
    assert clock.first_byte == 0.05
    assert stats.ttft_s == pytest.approx(2.0)
    assert stats.upstream_latency_s == pytest.approx(1.99)
    assert stats.gaps_s == pytest.approx((0.1, 0.2))


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 1e300, "completion_tokens": 4},
    {"prompt_tokens": -5, "completion_tokens": 4},
    {"prompt_tokens": 3, "completion_tokens": "4"},
    {"prompt_tokens": 3, "completion_tokens": 4.0},
    {"prompt_tokens": True, "completion_tokens": 4},
    {"prompt_tokens": MAX_SANE_TOKENS + 1, "completion_tokens": 4},
])
def test_usage_that_is_no_token_count_is_not_believed(usage: dict[str, object]) -> None:
    assert upstream_counts(usage, "completion_tokens") is None
    assert upstream_counts(usage, "prompt_tokens") is None
    assert usage_is_insane(usage)


def test_sane_usage_is_taken_as_reported() -> None:
    assert upstream_counts({"prompt_tokens": 3, "completion_tokens": 4}, "completion_tokens") == (3, 4)
    assert upstream_counts({"prompt_tokens": 7, "total_tokens": 7}, "prompt_tokens") == (7, 0)  # embeddings
    assert upstream_counts({"prompt_tokens": 7}, "completion_tokens") is None  # the needed count is missing
    assert upstream_counts(None, "prompt_tokens") is None
    assert not usage_is_insane({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
