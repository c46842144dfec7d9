"""The upstream error paths leave nothing to the cyclic GC: with it off, no UpstreamError and no UpstreamConnection
outlives the call once the caller has dropped the error. On the old code an error raised by dispatch's
`_pass_over` held itself (its frame's `error` in its own traceback, every caller's frame inside: ~55 objects a
request on an upstream 500), and a connection that failed held its raised failure, whose traceback held the
read's frame and so the connection. Against a scripted upstream on 127.0.0.1, under uvloop (the gateway's loop)."""
from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

import uvloop

from gateway import dispatch
from gateway.backends.base import UpstreamRequest
from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.backends.upstream_wire import UpstreamConnection
from gateway.catalog import ResolvedBackend
from gateway.errors import UpstreamError
from gateway.timing import RequestClock
from policies.decision import Target
from tests.support.raw_upstream import Close, RawUpstream, reply, sse

CHAT = UpstreamRequest("chat/completions", {"model": "m"}, "req_1")
STREAM = UpstreamRequest("chat/completions", {"model": "m", "stream": True}, "req_2", True)
SSE = "content-type: text/event-stream"
FAILED = reply(b'{"error": {"message": "boom", "type": "server_error"}}', status="500 Internal Server Error")
TARGETS = (Target("up", "m"),)


class Observer:
    """dispatch's AttemptObserver: what it was told."""

    def __init__(self) -> None:
        self.told: list[str] = []

    def started(self, target: Target) -> None:
        self.told.append("started")

    def failed(self, target: Target, error: UpstreamError) -> None:
        self.told.append("failed")

    def succeeded(self, target: Target) -> None:
        self.told.append("succeeded")

    def abandoned(self) -> None:
        self.told.append("abandoned")


def alive() -> tuple[int, int]:
    """Errors and connections alive (by type: isinstance on every gc object would ask lazy proxies)."""
    objects = gc.get_objects()
    return (sum(1 for o in objects if issubclass(type(o), UpstreamError)),
            sum(1 for o in objects if type(o) is UpstreamConnection))


def left_without_cyclic_gc(upstream: RawUpstream, use: Callable[[OpenAIHTTPBackend], Awaitable[str]]) -> tuple:
    """What `use` said (the error it caught, as text) and the errors and connections still alive after."""
    async def main() -> str:
        base_url = await upstream.start()
        backend = OpenAIHTTPBackend(ResolvedBackend("up", "openai", base_url, "sk-test", None))
        await backend.open()
        try:
            return await use(backend)
        finally:
            await backend.aclose()
            await asyncio.sleep(0.05)  # connection_lost runs
            upstream.stop()

    gc.collect()
    gc.disable()
    try:
        before = alive()
        said = uvloop.run(main())
        after = alive()
    finally:
        gc.enable()
    return said, after[0] - before[0], after[1] - before[1]


async def complete(backend: OpenAIHTTPBackend) -> str:
    try:
        await dispatch.complete(TARGETS, {"up": backend}, lambda t: CHAT, RequestClock(), Observer())
    except UpstreamError as exc:
        return exc.kind
    return "answered"


async def open_stream(backend: OpenAIHTTPBackend) -> str:
    try:
        opened = await dispatch.open_stream(TARGETS, {"up": backend}, lambda t: STREAM, RequestClock(), Observer())
    except UpstreamError as exc:
        return exc.kind
    await opened.rest.aclose()  # type: ignore[attr-defined]
    return "opened"


async def read_stream(backend: OpenAIHTTPBackend) -> str:
    chunks = 0
    try:
        async for batch in backend.stream(STREAM):
            chunks += len(batch)
    except UpstreamError as exc:
        return f"{chunks} then {exc.kind}"
    return f"{chunks}"


def test_an_upstream_error_on_a_non_streamed_call_is_freed_with_its_frames() -> None:
    assert left_without_cyclic_gc(RawUpstream(FAILED), complete) == ("status", 0, 0)


def test_an_upstream_error_opening_a_stream_is_freed_with_its_frames() -> None:
    assert left_without_cyclic_gc(RawUpstream(FAILED), open_stream) == ("status", 0, 0)


def test_a_stream_that_ends_without_a_chunk_is_freed_with_its_error() -> None:
    upstream = RawUpstream(reply(b"data: [DONE]\n\n", headers=SSE))
    assert left_without_cyclic_gc(upstream, open_stream) == ("protocol", 0, 0)


def test_a_connection_the_upstream_dropped_mid_stream_is_freed() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    two = sse(2, done=False)
    upstream = RawUpstream(Close(head + b"%x\r\n%s\r\n" % (len(two), two)))
    said, errors, connections = left_without_cyclic_gc(upstream, read_stream)
    assert said == "2 then protocol" and (errors, connections) == (0, 0)
