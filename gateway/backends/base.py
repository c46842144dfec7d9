"""The backend protocol every upstream kind implements, and the values that cross it.

A stream yields batches of chunks: each chunk is the JSON payload (bytes) of one OpenAI chunk object,
exactly as the upstream sent it where the upstream speaks OpenAI's wire format; a batch holds those
one read completed (never none), so the relay sends them on in one write. `[DONE]` is not a chunk.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

Chunk = bytes
Chunks = list[Chunk]  # the chunks one upstream read completed, in order; never empty


@dataclass(frozen=True)
class UpstreamRequest:
    path: str  # "chat/completions", "completions" or "embeddings"
    body: dict[str, Any]  # the client's fields cut to the allow-list (gateway/upstream_body.py), `model` the backend's
    request_id: str
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # extra headers (e.g. traceparent)


@dataclass(frozen=True)
class UpstreamResponse:
    content: bytes  # the upstream's JSON body, relayed unchanged
    data: dict[str, Any]  # the same, decoded (usage, finish reason)
    status: int = 200


@dataclass(frozen=True)
class BackendState:
    name: str
    kind: str
    in_flight: int
    requests: int
    failures: int
    last_error: str = ""


class Backend(Protocol):
    name: str
    kind: str

    async def open(self) -> None:
        """Create connection pools (called from the app's lifespan)."""
        ...

    async def aclose(self) -> None: ...

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        """Non-streamed call; raises UpstreamError (`after_first_byte` once the response headers came:
        then no other target is tried). A 200 whose body is an error object is an UpstreamError too."""
        ...

    def stream(self, request: UpstreamRequest) -> AsyncIterator[Chunks]:
        """Streamed call, batch by batch; raises UpstreamError before the first chunk or (after_first_byte)
        later, also for an in-band error event (`data: {"error": …}`), which is never yielded as a chunk
        (the chunks before it in the same read are yielded first)."""
        ...

    def state(self) -> BackendState: ...


class BackendCounters:
    """In-flight / request / failure counters a backend reports through state()."""

    __slots__ = ("failures", "in_flight", "last_error", "requests")

    def __init__(self) -> None:
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.last_error = ""

    def snapshot(self, name: str, kind: str) -> BackendState:
        return BackendState(name, kind, self.in_flight, self.requests, self.failures, self.last_error)
