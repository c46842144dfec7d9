"""The OpenAI-compatible backend's own HTTP/1.1 client against a scripted upstream on 127.0.0.1: bodies in
every framing and encoding, keep-alive reuse (and the one retry when a reused connection was closed as we
sent), the total deadline of a non-streamed body, and what becomes of a stream's connection."""
from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.backends.base import UpstreamRequest
from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.catalog import ResolvedBackend
from gateway.errors import UpstreamError
from policies.schema import Timeouts
from tests.support.raw_upstream import ANSWER, Close, Hold, RawUpstream, gzipped, reply, sse

CHAT = UpstreamRequest("chat/completions", {"model": "m"}, "req_1")
STREAM = UpstreamRequest("chat/completions", {"model": "m", "stream": True}, "req_2", True)
SSE = "content-type: text/event-stream"


def run(upstream: RawUpstream, use: Callable[[OpenAIHTTPBackend], Awaitable[Any]],
        runner: Callable[[Any], Any] = asyncio.run, **spec: Any) -> Any:
    """`use` a backend on `upstream` under `runner` (asyncio.run, or uvloop.run: the gateway's loop)."""
    async def main() -> Any:
        base_url = await upstream.start()
        backend = OpenAIHTTPBackend(ResolvedBackend("up", "openai", base_url, "sk-test", None, **spec))
        await backend.open()
        try:
            return await use(backend)
        finally:
            await backend.aclose()
            await asyncio.sleep(0.05)  # the server sees the hang-ups
            upstream.stop()
    return runner(main())


async def _frames(backend: OpenAIHTTPBackend, request: UpstreamRequest = STREAM) -> list[bytes]:
    return [p async for batch in backend.stream(request) for p in batch]


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "raw deflate"])
def test_a_body_in_any_framing_and_encoding_arrives_as_sent(framing: str, encoding: str) -> None:
    body = {"identity": ANSWER, "gzip": gzipped(ANSWER), "deflate": zlib.compress(ANSWER),
            "raw deflate": zlib.compress(ANSWER, wbits=-15)}[encoding]
    headers = "content-type: application/json" + ("" if encoding == "identity" else
                                                  f"\r\ncontent-encoding: {encoding.split()[-1]}")
    upstream = RawUpstream(reply(body, framing, headers))
    response = run(upstream, lambda b: b.complete(CHAT))
    assert response.content == ANSWER and response.data["choices"][0]["message"]["content"] == "hi"


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_a_gzipped_stream_is_decoded_frame_by_frame(framing: str) -> None:
    upstream = RawUpstream(reply(gzipped(sse(5)), framing, f"{SSE}\r\ncontent-encoding: gzip"))
    assert len(run(upstream, _frames)) == 5


def test_the_request_says_what_vllm_and_openai_expect() -> None:
    upstream = RawUpstream(reply(ANSWER), reply(sse(1), headers=SSE))

    async def both(backend: OpenAIHTTPBackend) -> None:
        await backend.complete(CHAT)
        await _frames(backend)
    run(upstream, both)
    plain, streamed = (h.decode().lower() for h in upstream.heads)
    assert plain.startswith("post /v1/chat/completions http/1.1\r\n")
    for head, length in ((plain, 13), (streamed, 27)):  # {"model":"m"} and {"model":"m","stream":true}
        for line in ("host: 127.0.0.1:", "content-type: application/json", "authorization: bearer sk-test",
                     f"content-length: {length}\r\n\r\n", "accept-encoding: gzip, deflate", "x-request-id: req_"):
            assert f"\r\n{line}" in head, (line, head)
    assert "accept: text/event-stream" in streamed and "text/event-stream" not in plain


def test_calls_one_after_another_share_one_keep_alive_connection() -> None:
    upstream = RawUpstream(reply(ANSWER), reply(sse(3), "chunked", SSE), reply(ANSWER, "chunked"))

    async def three(backend: OpenAIHTTPBackend) -> None:
        await backend.complete(CHAT)
        assert len(await _frames(backend)) == 3  # read to [DONE] and the body's end: pooled again
        await backend.complete(CHAT)
    run(upstream, three)
    assert upstream.connections == 1 and len(upstream.heads) == 3


def test_a_reused_connection_closed_as_we_sent_is_retried_once_on_a_new_one() -> None:
    upstream = RawUpstream(reply(ANSWER), Close(), reply(ANSWER), reply(sse(2), headers=SSE), Close(),
                           reply(sse(2), headers=SSE))

    async def calls(backend: OpenAIHTTPBackend) -> None:
        await backend.complete(CHAT)
        assert (await backend.complete(CHAT)).content == ANSWER  # the keep-alive race: not the caller's failure
        assert len(await _frames(backend)) == 2
        assert len(await _frames(backend)) == 2  # streams too
        assert backend.state().failures == 0
    run(upstream, calls)
    assert upstream.connections == 3 and len(upstream.heads) == 6


def test_no_retry_once_a_byte_of_the_response_came() -> None:
    upstream = RawUpstream(reply(ANSWER), Close(b"HTTP/1.1 200 OK\r\ncontent-le"), reply(ANSWER))

    async def calls(backend: OpenAIHTTPBackend) -> UpstreamError:
        await backend.complete(CHAT)
        with pytest.raises(UpstreamError) as info:
            await backend.complete(CHAT)
        return info.value
    error = run(upstream, calls)
    assert error.kind == "protocol" and "connection failed" in error.message and not error.after_first_byte
    assert len(upstream.heads) == 2 and upstream.replies  # the request went out once


def test_a_new_connection_closed_before_answering_is_no_retry_case() -> None:
    upstream = RawUpstream(Close(), reply(ANSWER))

    async def call(backend: OpenAIHTTPBackend) -> UpstreamError:
        with pytest.raises(UpstreamError) as info:
            await backend.complete(CHAT)
        return info.value
    assert run(upstream, call).kind == "protocol" and len(upstream.heads) == 1


def test_a_body_not_finished_within_total_s_is_a_timeout_after_the_first_byte() -> None:
    upstream = RawUpstream(Hold(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{\"id\":"))

    async def call(backend: OpenAIHTTPBackend) -> UpstreamError:
        with pytest.raises(UpstreamError) as info:
            await backend.complete(CHAT)
        return info.value
    error = run(upstream, call, timeouts=Timeouts(first_byte_s=5, between_chunks_s=5, total_s=0.3))
    assert (error.kind, error.after_first_byte) == ("timeout", True)
    assert error.message == "upstream up did not finish its response within 0.3 s"
    assert upstream.hung_up == 1  # the stalled connection was closed, not pooled


def test_a_stream_abandoned_midway_closes_its_connection_and_the_next_call_opens_another() -> None:
    upstream = RawUpstream(Hold(reply(b"", "close", SSE).rstrip(b"\r\n") + b"\r\n\r\n" + sse(2, done=False)),
                           reply(ANSWER))

    async def calls(backend: OpenAIHTTPBackend) -> None:
        stream = backend.stream(STREAM)
        assert len(await anext(stream)) >= 1
        await stream.aclose()  # the client went away
        await backend.complete(CHAT)
        assert backend.state().in_flight == 0
    run(upstream, calls)
    assert upstream.connections == 2 and upstream.hung_up >= 1


async def stream_error(backend: OpenAIHTTPBackend) -> tuple[int, UpstreamError]:
    """The chunks a stream yielded before it failed, and its error."""
    got = 0
    with pytest.raises(UpstreamError) as info:
        async for batch in backend.stream(STREAM):
            got += len(batch)
    return got, info.value


def test_a_stall_between_chunks_fails_the_stream_after_its_first_byte() -> None:
    upstream = RawUpstream(Hold(b"HTTP/1.1 200 OK\r\n" + SSE.encode() + b"\r\ntransfer-encoding: chunked\r\n\r\n"
                                + b"%x\r\n%s\r\n" % (len(sse(1, False)), sse(1, False))))
    got, error = run(upstream, stream_error, timeouts=Timeouts(first_byte_s=5, between_chunks_s=0.2))
    assert got == 1 and (error.kind, error.after_first_byte) == ("timeout", True) and "timed out" in error.message
