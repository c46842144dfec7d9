"""The OpenAI-compatible backend hands the relay every frame one read completed as one batch (so the
relay writes them on together), keeps their order, and still relays the frames that came before an
in-band error in the same read before raising it. The upstream is a real HTTP server on 127.0.0.1
that writes its whole SSE body in one write."""
from __future__ import annotations

import asyncio
import json

from gateway.backends.base import UpstreamRequest
from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.catalog import ResolvedBackend
from gateway.errors import UpstreamError


def _frame(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _chunk(i: int) -> dict[str, object]:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": f"t{i}"}}]}


async def _serve_once(body: bytes) -> tuple[asyncio.Server, int]:
    """One SSE response, headers and the whole body in a single write (one read on the other end)."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _batches(body: bytes) -> tuple[list[list[bytes]], UpstreamError | None]:
    server, port = await _serve_once(body)
    backend = OpenAIHTTPBackend(ResolvedBackend("up", "openai", f"http://127.0.0.1:{port}/v1", None, None))
    await backend.open()
    got: list[list[bytes]] = []
    error = None
    try:
        async for batch in backend.stream(UpstreamRequest("chat/completions", {"model": "m"}, "req_1", True)):
            got.append(list(batch))
    except UpstreamError as exc:
        error = exc
    finally:
        await backend.aclose()
        server.close()
    return got, error


def test_frames_of_one_read_come_as_one_batch_in_order() -> None:
    body = b"".join(_frame(_chunk(i)) for i in range(5)) + b"data: [DONE]\n\n"
    got, error = asyncio.run(_batches(body))
    assert error is None
    assert [json.loads(p)["choices"][0]["delta"]["content"] for b in got for p in b] == [f"t{i}" for i in range(5)]
    assert len(got) == 1 and len(got[0]) == 5


def test_frames_before_an_in_band_error_are_yielded_then_the_error_raised() -> None:
    body = _frame(_chunk(0)) + _frame(_chunk(1)) + _frame({"error": {"message": "core died", "type": "x"}})
    got, error = asyncio.run(_batches(body))
    assert [len(b) for b in got] == [2]
    assert error is not None and error.kind == "in_band" and error.after_first_byte
    assert "core died" in error.message


def test_an_error_before_any_frame_is_no_in_band_error() -> None:
    body = _frame({"error": {"message": "overloaded", "type": "x"}}) + _frame(_chunk(0))
    got, error = asyncio.run(_batches(body))
    assert got == []
    assert error is not None and not error.after_first_byte  # another target may still be tried
