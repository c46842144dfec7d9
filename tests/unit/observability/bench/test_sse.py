"""Which SSE events count as content, usage from the last chunk, and malformed streams."""

from __future__ import annotations

import pytest

from observability.bench.sse import SseParser, StreamError

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'


def content(text: str) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % text.encode()


def test_role_only_and_empty_chunks_are_not_content() -> None:
    p = SseParser()
    p.feed(ROLE, 1.0)
    p.feed(content(""), 1.5)
    p.feed(b": keep-alive\n\n", 1.7)
    assert p.content_times == []
    p.feed(content("hi"), 2.0)
    assert p.content_times == [2.0]


def test_events_split_across_reads_count_when_complete() -> None:
    p = SseParser()
    first = len(content("a"))
    whole = content("a") + content("b")
    p.feed(whole[:20], 1.0)
    p.feed(whole[20 : first + 10], 2.0)
    assert p.content_times == [2.0]  # the first event completed in the second read
    p.feed(whole[first + 10 :], 3.0)
    assert p.content_times == [2.0, 3.0]


def test_crlf_completions_text_usage_and_done() -> None:
    p = SseParser()
    p.feed(b'data: {"choices":[{"text":" x"}]}\r\n\r\n', 1.0)
    p.feed(
        b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}\r\n\r\ndata: [DONE]\r\n\r\n',
        2.0,
    )
    assert p.content_times == [1.0]
    assert p.usage == {"prompt_tokens": 5, "completion_tokens": 1} and p.done


def test_malformed_and_error_events_raise_with_their_kind() -> None:
    with pytest.raises(StreamError) as bad:
        SseParser().feed(b"data: {oops\n\n", 1.0)
    assert bad.value.kind == "malformed_sse"
    with pytest.raises(StreamError) as err:
        SseParser().feed(b'data: {"error":{"message":"overloaded"}}\n\n', 1.0)
    assert err.value.kind == "stream_error" and "overloaded" in str(err.value)


def test_crlf_split_between_cr_and_lf_across_reads_still_ends_the_event() -> None:
    # A read that ends in "\r" with the "\n" in the next one: each read's CRLFs were folded on their own,
    # so "\r\n\r" + "\n" became "\n\r\n", the events never split, and the next one was malformed.
    stream = b'data: {"choices":[{"text":"a"}]}\r\n\r\ndata: {"choices":[{"text":"b"}]}\r\n\r\ndata: [DONE]\r\n\r\n'
    for cut in range(1, len(stream)):
        p = SseParser()
        p.feed(stream[:cut], 1.0)
        p.feed(stream[cut:], 2.0)
        assert len(p.content_times) == 2 and p.done, cut
