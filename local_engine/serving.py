"""One OpenAI request through the engine: prompt ids and sampling in, SSE events or one body out.

Used by the routes in server.py; a client that goes away aborts its sequence (blocks freed now).
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from local_engine.async_engine import RequestStream
from local_engine.engine import RequestOutput
from local_engine.errors import EngineError
from local_engine.http_errors import http_error
from local_engine.responses import (
    SSE_DONE,
    ResponseIds,
    TokenNames,
    chat_chunk,
    chat_completion,
    chat_logprobs,
    chat_usage_chunk,
    completion,
    completion_chunk,
    completion_logprobs,
    completion_usage_chunk,
    sse,
    usage,
)


@dataclass(frozen=True)
class Collected:
    """A whole (non-streamed) result."""

    text: str
    finish_reason: str | None
    num_prompt_tokens: int
    num_completion_tokens: int
    logprobs: list[Any]  # the runner's TokenLogprobs, when asked for
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache


@asynccontextmanager
async def abort_on_disconnect(request: Request, stream: RequestStream) -> AsyncIterator[None]:
    """While the body is computed, a client disconnect aborts the sequence at once."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        stream.close()

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()


async def collect(stream: RequestStream, request: Request) -> Collected:
    pieces: list[str] = []
    logprobs: list[Any] = []
    last: RequestOutput | None = None
    try:
        async with abort_on_disconnect(request, stream):
            async for out in stream:
                pieces.append(out.new_text)
                if out.logprobs is not None:
                    logprobs.append(out.logprobs)
                last = out
    finally:
        stream.close()
    reason = last.finish_reason.value if last is not None and last.finish_reason is not None else None
    return Collected("".join(pieces), reason, stream.num_prompt_tokens,
                     last.num_completion_tokens if last is not None else 0, logprobs,
                     last.num_cached_tokens if last is not None else 0)


def chat_body(ids: ResponseIds, result: Collected, names: TokenNames, want_logprobs: bool) -> dict[str, Any]:
    lps = chat_logprobs(result.logprobs, names) if want_logprobs else None
    return chat_completion(ids, result.text, result.finish_reason,
                           usage(result.num_prompt_tokens, result.num_completion_tokens, result.num_cached_tokens), lps)


def completion_body(ids: ResponseIds, result: Collected, names: TokenNames, want_logprobs: bool,
                    echo_text: str = "") -> dict[str, Any]:
    lps = completion_logprobs(result.logprobs, names, len(echo_text)) if want_logprobs else None
    return completion(ids, echo_text + result.text, result.finish_reason,
                      usage(result.num_prompt_tokens, result.num_completion_tokens, result.num_cached_tokens), lps)


async def chat_events(stream: RequestStream, ids: ResponseIds, names: TokenNames,
                      include_usage: bool) -> AsyncIterator[bytes]:
    """SSE for /v1/chat/completions: a role chunk, content chunks, a finish chunk, [usage], [DONE]."""
    try:
        yield sse(chat_chunk(ids, {"role": "assistant", "content": ""}, include_usage=include_usage))
        last: RequestOutput | None = None
        while outs := await stream.next_batch():
            last = outs[-1]
            text = "".join(o.new_text for o in outs)
            entries = [o.logprobs for o in outs if o.logprobs is not None]
            lps = chat_logprobs(entries, names) if entries else None
            if text or lps:
                yield sse(chat_chunk(ids, {"content": text}, logprobs=lps, include_usage=include_usage))
            if last.finish_reason is not None:
                yield sse(chat_chunk(ids, {}, last.finish_reason.value, include_usage=include_usage))
        if include_usage and last is not None:
            yield sse(chat_usage_chunk(ids, usage(last.num_prompt_tokens, last.num_completion_tokens, last.num_cached_tokens)))
        yield SSE_DONE
    except EngineError as exc:  # the engine died mid-stream: tell the client in-band
        yield sse(http_error(exc).body())
    finally:
        stream.close()


async def completion_events(stream: RequestStream, ids: ResponseIds, names: TokenNames,
                            include_usage: bool, echo_text: str = "") -> AsyncIterator[bytes]:
    """SSE for /v1/completions: text chunks (the echoed prompt first), a finish chunk, [usage], [DONE]."""
    try:
        if echo_text:
            yield sse(completion_chunk(ids, echo_text, include_usage=include_usage))
        offset = len(echo_text)
        last: RequestOutput | None = None
        while outs := await stream.next_batch():
            last = outs[-1]
            text = "".join(o.new_text for o in outs)
            entries = [o.logprobs for o in outs if o.logprobs is not None]
            lps = completion_logprobs(entries, names, offset) if entries else None
            offset += len(text)
            reason = last.finish_reason.value if last.finish_reason is not None else None
            if text or lps or reason:
                yield sse(completion_chunk(ids, text, reason, lps, include_usage=include_usage))
        if include_usage and last is not None:
            yield sse(completion_usage_chunk(ids, usage(last.num_prompt_tokens, last.num_completion_tokens, last.num_cached_tokens)))
        yield SSE_DONE
    except EngineError as exc:
        yield sse(http_error(exc).body())
    finally:
        stream.close()
