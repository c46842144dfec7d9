"""Try a route decision's targets in order: a failure before the first byte moves on to the next
target (when the failure is the upstream's, not the request's); once the upstream has started
producing (a stream's first chunk, a non-streamed call's response headers) the call is committed."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.backends.base import Backend, Chunks, UpstreamRequest, UpstreamResponse
from gateway.errors import NoBackendAvailable, UpstreamError
from gateway.timing import RequestClock
from observability.fast_init import fast_init
from policies.decision import Target

RequestFor = Callable[[Target], UpstreamRequest]
T = TypeVar("T")


class AttemptObserver(Protocol):
    """Told about each target tried: started, then failed (before the first byte), succeeded, or abandoned (the
    call cancelled before its result: the client left, shutdown). A non-streamed call succeeds here, at its
    response; a stream's success (its TTFT) is the relay's to report, at its first content chunk (or its
    abandonment, when it ends before one), so it is reported once, by one owner."""

    def started(self, target: Target) -> None: ...

    def failed(self, target: Target, error: UpstreamError) -> None: ...

    def succeeded(self, target: Target) -> None: ...

    def abandoned(self) -> None: ...


@dataclass(frozen=True)
class Attempt:
    target: Target
    error: str  # why this target was passed over


@fast_init  # built per request (observability/fast_init.py)
@dataclass(frozen=True, slots=True)
class Completed:
    """A non-streamed call's result: the target that answered, its response, the targets passed over."""

    target: Target
    response: UpstreamResponse
    attempts: tuple[Attempt, ...]


@fast_init  # built per request (observability/fast_init.py)
@dataclass(frozen=True, slots=True)
class OpenedStream:
    """A stream's start: the target that answered, its first batch, the rest (the relay reads and closes
    it) and the targets passed over."""

    target: Target
    first: Chunks  # the first batch
    rest: AsyncIterator[Chunks]
    attempts: tuple[Attempt, ...]


def _candidates(targets: tuple[Target, ...], backends: Mapping[str, Backend]) -> list[tuple[Target, Backend]]:
    found = [(t, backends[t.backend]) for t in targets if t.backend in backends]
    if not found:
        names = ", ".join(t.backend for t in targets) or "none"
        raise NoBackendAvailable(f"No configured backend can serve this model (targets: {names}).",
                                 code="no_backend")
    return found


def _pass_over(observer: AttemptObserver, attempts: list[Attempt], target: Target, error: UpstreamError,
               *, is_last: bool) -> bool:
    """A target failed: note it and move on (True), or False when the error is to be raised: the request's own
    (not retryable), the upstream had already started producing (a retry would pay twice), or no target is left.
    The caller raises it from its `except` (whose name is cleared as it propagates): raised here, this frame's
    `error` would hold the error whose traceback holds this frame, a cycle with every caller's frame inside."""
    observer.failed(target, error)
    if not error.retryable or error.after_first_byte or is_last:
        return False
    attempts.append(Attempt(target, error.message))
    return True


async def _first_answer(targets: tuple[Target, ...], backends: Mapping[str, Backend], clock: RequestClock,
                        observer: AttemptObserver, call: Callable[[Target, Backend], Awaitable[T]],
                        ) -> tuple[Target, T, tuple[Attempt, ...]]:
    """Await `call` on each target in turn until one answers (its first byte marked on `clock`); the
    target, its answer and the targets passed over."""
    attempts: list[Attempt] = []
    candidates = _candidates(targets, backends)
    for i, (target, backend) in enumerate(candidates):
        observer.started(target)
        clock.mark_upstream_sent()
        try:
            answer = await call(target, backend)
        except UpstreamError as exc:
            if _pass_over(observer, attempts, target, exc, is_last=i == len(candidates) - 1):
                continue
            raise
        except asyncio.CancelledError:
            observer.abandoned()
            raise
        clock.mark_first_byte()
        return target, answer, tuple(attempts)
    raise AssertionError("unreachable: the last candidate returns or raises")


async def complete(targets: tuple[Target, ...], backends: Mapping[str, Backend], request_for: RequestFor,
                   clock: RequestClock, observer: AttemptObserver) -> Completed:
    target, response, attempts = await _first_answer(targets, backends, clock, observer,
                                                     lambda t, backend: backend.complete(request_for(t)))
    clock.mark_chunk()  # non-streamed: the whole body is the first (and only) content
    observer.succeeded(target)
    return Completed(target, response, attempts)


async def _first_chunk(chunks: AsyncIterator[Chunks], target: Target) -> tuple[Chunks, AsyncIterator[Chunks]]:
    """A stream's first batch and the stream; closed when it fails before one."""
    try:
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            raise UpstreamError(f"upstream {target.backend} ended the stream without a chunk",
                                backend=target.backend, kind="protocol") from None  # no local: no cycle
    except UpstreamError:
        await chunks.aclose()  # type: ignore[attr-defined]
        raise
    return first, chunks


async def open_stream(targets: tuple[Target, ...], backends: Mapping[str, Backend], request_for: RequestFor,
                      clock: RequestClock, observer: AttemptObserver) -> OpenedStream:
    """Start the first target whose stream yields a first chunk; the caller must aclose() `rest` and
    tell `observer` of the stream's success (the relay does, at its first content chunk). Only the first
    byte is marked: whether (and when) the first token came is the relay's to judge, as OpenAI-style
    servers open with a role-only chunk before any content; so is the success."""
    target, (first, chunks), attempts = await _first_answer(
        targets, backends, clock, observer, lambda t, backend: _first_chunk(backend.stream(request_for(t)), t))
    return OpenedStream(target, first, chunks, attempts)
