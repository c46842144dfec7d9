"""The upstream client at HTTP/1.1's edges (review, session 10): a large error body on a stream, a gzip body
that ends early, an interim 1xx, `connection: close`, and a header value holding a line break."""
from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from gateway.backends.base import UpstreamRequest
from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.errors import UpstreamError
from policies.schema import Timeouts
from tests.integration.gateway.test_upstream_client import CHAT, SSE, run, stream_error
from tests.support.raw_upstream import ANSWER, Close, RawUpstream, reply, sse


async def _call_error(backend: OpenAIHTTPBackend, request: UpstreamRequest = CHAT) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await backend.complete(request)
    return info.value


def test_a_large_error_body_on_a_stream_is_the_upstreams_error_not_a_timeout() -> None:
    """A streamed call's error body past the 128 KiB read-pause mark is still read to its end."""
    body = json.dumps({"error": {"message": "overloaded " + "x" * 300_000, "code": "busy"}}).encode()
    upstream = RawUpstream(reply(body, "length", status="503 Service Unavailable"))
    got, error = run(upstream, stream_error, timeouts=Timeouts(first_byte_s=3, between_chunks_s=3))
    assert got == 0 and error.upstream_status == 503 and error.code == "busy", error.message


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_gzipped_stream_that_ends_early_is_an_error_not_a_short_answer(framing: str) -> None:
    cut = gzip.compress(sse(200))[:-20]  # most frames decode; the end of the stream and [DONE] never come
    upstream = RawUpstream(reply(cut, framing, f"{SSE}\r\ncontent-encoding: gzip"))
    got, error = run(upstream, stream_error)
    assert got > 0 and error.kind == "protocol" and error.after_first_byte and "ended early" in error.message


def test_a_gzipped_body_without_its_trailer_is_an_error() -> None:
    upstream = RawUpstream(reply(gzip.compress(ANSWER)[:-8], "length", "content-encoding: gzip"))
    error = run(upstream, _call_error)
    assert error.kind == "protocol" and "ended early" in error.message, error.message


def test_an_interim_100_is_skipped_and_the_real_response_read() -> None:
    upstream = RawUpstream(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(ANSWER), reply(ANSWER))

    async def calls(backend: OpenAIHTTPBackend) -> list[Any]:
        return [(await backend.complete(CHAT)).content for _ in range(2)]
    assert run(upstream, calls) == [ANSWER, ANSWER] and upstream.connections == 1


def test_a_response_with_connection_close_is_never_pooled() -> None:
    closing = reply(ANSWER, headers="content-type: application/json\r\nconnection: close")
    upstream = RawUpstream(closing, reply(ANSWER))

    async def calls(backend: OpenAIHTTPBackend) -> list[Any]:
        return [(await backend.complete(CHAT)).content for _ in range(2)]
    assert run(upstream, calls) == [ANSWER, ANSWER] and upstream.connections == 2


@pytest.mark.parametrize("where", ["request id", "header"])
def test_a_line_break_in_a_header_value_is_never_sent(where: str) -> None:
    if where == "request id":
        request = UpstreamRequest("chat/completions", {"model": "m"}, "req_1\r\nx-evil: 1")
    else:
        request = UpstreamRequest("chat/completions", {"model": "m"}, "req_1", headers={"x-a": "1\nx-evil: 1"})
    upstream = RawUpstream(reply(ANSWER))
    error = run(upstream, lambda b: _call_error(b, request))
    assert error.kind == "protocol" and not upstream.heads and upstream.replies


def test_response_headers_past_the_limit_are_an_error_not_a_growing_buffer() -> None:
    """llhttp sets no limit on a response head: past 256 KiB the call fails (kind protocol), never a 500."""
    big = "content-type: application/json\r\n" + "\r\n".join(f"x-pad-{i}: {'a' * 1000}" for i in range(300))
    upstream = RawUpstream(reply(ANSWER, "length", big))
    error = run(upstream, _call_error)
    assert error.kind == "protocol" and "over 256 KiB" in error.message, error.message


def test_headers_under_the_limit_still_answer() -> None:
    fine = "content-type: application/json\r\n" + "\r\n".join(f"x-pad-{i}: {'a' * 1000}" for i in range(100))
    upstream = RawUpstream(reply(ANSWER, "length", fine), reply(ANSWER))

    async def calls(backend: OpenAIHTTPBackend) -> list[Any]:
        return [(await backend.complete(CHAT)).content for _ in range(2)]
    assert run(upstream, calls) == [ANSWER, ANSWER] and upstream.connections == 1  # and the connection kept


def test_a_body_read_to_the_close_that_ends_in_a_reset_is_cut_not_complete() -> None:
    """No length and no chunking: the close ends the body, but a TCP reset is a crash, not an end."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
    upstream = RawUpstream(Close(head + sse(5, done=False), reset=True))
    got, error = run(upstream, stream_error)  # (before: 5 frames and a normal end, a short answer as success)
    assert error.kind == "protocol" and error.after_first_byte == (got > 0), error.message  # got < 5: a busy
    # host may not have read them all before the reset dropped the rest


def test_a_101_switching_protocols_is_a_protocol_error(caplog: pytest.LogCaptureFixture) -> None:
    """httptools raises HttpParserUpgrade (no HttpParserError): it escaped data_received as a 'Fatal error'."""
    upstream = RawUpstream(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
    error = run(upstream, _call_error)
    assert error.kind == "protocol" and "switched protocols (101)" in error.message, error.message
    assert "Fatal error" not in caplog.text
