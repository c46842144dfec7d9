"""SSE framing: encode, split byte streams at any boundary, error frame."""
from __future__ import annotations

import orjson
import pytest

from gateway.sse import (
    DONE_FRAME,
    MAX_EVENT_BYTES,
    EventTooLarge,
    FrameSplitter,
    encode_frame,
    error_frame,
    parse_stream,
)

STREAM = b'data: {"a":1}\n\ndata: {"b":2}\n\n: keep-alive comment\n\ndata: [DONE]\n\n'


def test_encode() -> None:
    assert encode_frame(b'{"x":1}') == b'data: {"x":1}\n\n'
    assert DONE_FRAME == b"data: [DONE]\n\n"


def test_parse_whole_stream_skips_comments() -> None:
    assert parse_stream(STREAM) == [b'{"a":1}', b'{"b":2}', b"[DONE]"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_split_at_any_byte_boundary(size: int) -> None:
    splitter = FrameSplitter()
    out: list[bytes] = []
    for i in range(0, len(STREAM), size):
        out += splitter.feed(STREAM[i:i + size])
    assert out + splitter.flush() == [b'{"a":1}', b'{"b":2}', b"[DONE]"]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 100])
def test_crlf_streams(size: int) -> None:
    data = STREAM.replace(b"\n", b"\r\n")
    splitter = FrameSplitter()
    out: list[bytes] = []
    for i in range(0, len(data), size):
        out += splitter.feed(data[i:i + size])
    assert out + splitter.flush() == [b'{"a":1}', b'{"b":2}', b"[DONE]"]


def test_multiline_data_and_event_fields() -> None:
    assert parse_stream(b"event: message\ndata: line1\ndata:line2\nid: 3\n\n") == [b"line1\nline2"]


def test_unterminated_last_event_is_flushed() -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b'data: {"a":1}\n\ndata: {"b"') == [b'{"a":1}']
    assert splitter.feed(b":2}") == []
    assert splitter.flush() == [b'{"b":2}']


def test_error_frame_is_openai_shaped() -> None:
    frame = error_frame("upstream died", "upstream_error", "upstream_protocol")
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    body = orjson.loads(frame[6:-2])
    assert body == {"error": {"message": "upstream died", "type": "upstream_error", "param": None,
                              "code": "upstream_protocol"}}


def test_an_event_past_the_size_limit_is_refused_not_buffered() -> None:
    splitter = FrameSplitter(max_event_bytes=64)
    assert splitter.feed(b"data: " + b"x" * 50 + b"\n\n") == [b"x" * 50]
    with pytest.raises(EventTooLarge):
        for _ in range(10):  # an event that never ends: refused once past the limit
            splitter.feed(b"y" * 20)
    with pytest.raises(EventTooLarge):  # also when the whole oversized event arrives in one piece
        FrameSplitter(max_event_bytes=64).feed(b"data: " + b"z" * 100 + b"\n\ndata: 1\n\n")


def test_the_default_limit_is_far_above_real_chunks() -> None:
    big = b"data: " + b"a" * (1024 * 1024) + b"\n\n"
    assert FrameSplitter().feed(big) == [b"a" * (1024 * 1024)]
    assert MAX_EVENT_BYTES == 8 * 1024 * 1024


@pytest.mark.parametrize(("piece", "payloads"), [
    (b'data: {"a":1}\n\n', [b'{"a":1}']),  # the common read: one whole event
    (b"data: \n\n", [b""]),
    (b"data: a\ndata: b\n\n", [b"a\nb"]),  # two data lines: not the one-line shortcut
    (b'data: {"a":1}\r\n\r\n', [b'{"a":1}']),
    (b'data: {"a":1}\n\ndata: {"b":2}\n\n', [b'{"a":1}', b'{"b":2}']),
    (b"data:x\n\n", [b"x"]),
    (b": comment\n\n", []),
])
def test_a_read_of_whole_events_gives_their_payloads(piece: bytes, payloads: list[bytes]) -> None:
    splitter = FrameSplitter()
    assert splitter.feed(piece) == payloads
    assert splitter.feed(b'data: {"c":3}\n\n') == [b'{"c":3}']  # nothing was held back
    assert splitter.flush() == []


def test_a_whole_event_one_byte_past_the_limit_is_refused() -> None:
    assert FrameSplitter(max_event_bytes=16).feed(b"data: " + b"x" * 10 + b"\n\n") == [b"x" * 10]
    with pytest.raises(EventTooLarge):
        FrameSplitter(max_event_bytes=16).feed(b"data: " + b"x" * 11 + b"\n\n")


def test_after_a_held_piece_the_next_event_is_joined_not_taken_alone() -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b'data: {"a"') == []
    assert splitter.feed(b":1}\n\n") == [b'{"a":1}']
