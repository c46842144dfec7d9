"""The one-event read's fast paths (FrameSplitter.feed, sort_out) rule as the general paths do."""
from __future__ import annotations

import pytest

from gateway.backends.stream_frames import sort_out
from gateway.sse import EventTooLarge, FrameSplitter

CHUNK = b'{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"}}]}'
ERROR = b'{"error":{"message":"overloaded [{ retry }]","type":"server_error"}}'


@pytest.mark.parametrize(("piece", "payloads"), [
    (b"data: " + CHUNK + b"\n\n", [CHUNK]),
    (b"data: a\rdata: b\n\n", [b"a\nb"]),  # a CR line break inside the one read: two data lines
    (b"data: x\r\n\n", [b"x"]),
    (b"data: x\n", []),  # half an event: held
    (b"data: x\n\ndata: y\n\n", [b"x", b"y"]),
    (b"event: e\ndata: x\n\n", [b"x"]),
    (b"data:x\n\n", [b"x"]),
])
def test_one_read_from_an_empty_splitter(piece: bytes, payloads: list[bytes]) -> None:
    splitter = FrameSplitter()
    assert splitter.feed(piece) == payloads
    # the same bytes through the general path (something held first) give the same payloads
    held = FrameSplitter()
    assert held.feed(piece[:1]) == [] and held.feed(piece[1:]) == payloads


def test_a_one_event_read_past_the_limit_is_refused() -> None:
    with pytest.raises(EventTooLarge):
        FrameSplitter(max_event_bytes=10).feed(b"data: 12345\n\n")


@pytest.mark.parametrize(("payload", "kept", "end"), [
    (CHUNK, [CHUNK], None),
    (ERROR, [], ERROR),  # an error object holding `[{` in its message still ends the stream
    (b"[DONE]", [], b"[DONE]"),
    (b"{}", [], None),  # an empty frame is dropped
    (b'{"id":"c","choices":[],"usage":{"total_tokens":3}}', [b'{"id":"c","choices":[],"usage":{"total_tokens":3}}'],
     None),
])
def test_sort_out_of_one_payload(payload: bytes, kept: list[bytes], end: bytes | None) -> None:
    assert sort_out([payload]) == (kept, end)
    assert sort_out([CHUNK, payload]) == ([CHUNK, *kept], end)  # the general loop agrees
