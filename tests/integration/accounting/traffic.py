"""Client-side traffic for the accounting tests: concurrent streamed and non-streamed chat requests
through the openai SDK, and what the clients saw (statuses, backends, the upstream's `usage`)."""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import openai


@dataclass(frozen=True)
class Outcome:
    """One request as its client saw it."""

    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    backend: str | None = None  # x-hybridgw-backend
    rule: str | None = None  # x-hybridgw-route-rule
    request_id: str | None = None
    retry_after: str | None = None
    error: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    content_chunks: int = 0  # streamed chunks that carried text
    cut: bool = False  # a stream the gateway ended with an in-band error frame (e.g. a hard budget)


@dataclass
class Seen:
    """Totals of what the clients saw, per team."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200]

    def totals(self) -> dict[str, int]:
        ok = self.ok
        return {"requests": len(ok), "prompt_tokens": sum(o.prompt_tokens for o in ok),
                "completion_tokens": sum(o.completion_tokens for o in ok)}

    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes)


def prompt(i: int) -> list[dict[str, str]]:
    """Prompts of different lengths (the fake counts words), so per-request numbers differ."""
    return [{"role": "user", "content": " ".join(f"word{j}" for j in range(1 + i % 9))}]


def fake_usage(i: int, chunks: int) -> tuple[int, int]:
    """What the fake upstream reports for chat(i, chunks=...): prompt words, one token per chunk."""
    return sum(len(m["content"].split()) for m in prompt(i)), chunks


def _error(exc: openai.APIStatusError) -> Outcome:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    return Outcome(exc.status_code, request_id=exc.response.headers.get("x-request-id"),
                   retry_after=exc.response.headers.get("retry-after"), error=dict(error or {}))


def _ok(headers: Any, usage: tuple[int, int], stream: bool, content_chunks: int = 0) -> Outcome:
    return Outcome(200, usage[0], usage[1], headers.get("x-hybridgw-backend"), headers.get("x-hybridgw-route-rule"),
                   headers.get("x-request-id"), stream=stream, content_chunks=content_chunks)


async def _streamed(client: openai.AsyncOpenAI, kwargs: dict[str, Any], include_usage: bool,
                    expected: tuple[int, int]) -> Outcome:
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = await client.chat.completions.with_raw_response.create(stream=True, **options, **kwargs)
    usage, content_chunks = None, 0
    try:
        async for chunk in raw.parse():
            if chunk.usage is not None:
                usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            content_chunks += any(c.delta.content for c in chunk.choices)
    except openai.APIError as exc:  # an error frame after the 200: the stream was cut
        body = exc.body if isinstance(exc.body, dict) else {}
        return Outcome(200, expected[0], content_chunks, raw.headers.get("x-hybridgw-backend"),
                       raw.headers.get("x-hybridgw-route-rule"), raw.headers.get("x-request-id"),
                       error=dict(body), stream=True, content_chunks=content_chunks, cut=True)
    if include_usage:
        assert usage is not None, "include_usage asked, no usage chunk came"
        return _ok(raw.headers, usage, True, content_chunks)
    # The gateway asked the upstream for usage on the client's behalf; the client must not see it.
    assert usage is None, "usage relayed to a client that did not ask for it"
    return _ok(raw.headers, expected, True, content_chunks)


async def chat(client: openai.AsyncOpenAI, i: int, *, stream: bool, chunks: int = 4, max_tokens: int = 16,
               include_usage: bool = True, **extra: Any) -> Outcome:
    """One chat request; its tokens are the `usage` the upstream reported and the gateway relayed
    (for a stream without include_usage, which shows none: the fake's own deterministic numbers)."""
    kwargs: dict[str, Any] = {"model": "m", "messages": prompt(i), "max_tokens": max_tokens,
                              "user": f"fake:chunks={chunks}", **extra}  # extra may name another model
    try:
        if stream:
            return await _streamed(client, kwargs, include_usage, fake_usage(i, chunks))
        raw = await client.chat.completions.with_raw_response.create(**kwargs)
        completion = raw.parse()
        assert completion.usage is not None
        return _ok(raw.headers, (completion.usage.prompt_tokens, completion.usage.completion_tokens), False)
    except openai.APIStatusError as exc:
        return _error(exc)


async def burst(clients: list[openai.AsyncOpenAI], count: int, *, concurrency: int = 24, start: int = 0,
                **kw: Any) -> Seen:
    """`count` requests spread over `clients` (in turn, pairs of one streamed and one not; every
    other stream without include_usage), `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)
    seen = Seen()

    async def one(i: int) -> None:
        async with gate:
            outcome = await chat(clients[(i // 2) % len(clients)], i, stream=i % 2 == 0, chunks=1 + i % 6,
                                 include_usage=i % 4 != 2, **kw)
        seen.outcomes.append(outcome)

    await asyncio.gather(*(one(start + i) for i in range(count)))
    return seen
