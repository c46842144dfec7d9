"""One measured request as the client saw it (the frozen row every metric, table and file is
built from); times are seconds on the run's monotonic clock, 0 = the run's start."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestRecord:
    index: int
    pattern: str
    team: str
    isl: int  # prompt tokens we built (our tokenizer)
    osl: int  # max_tokens asked for
    send_s: float  # request about to be written (connection set-up included, as a user sees it)
    end_s: float  # last byte read, or the failure
    chunk_s: tuple[float, ...] = ()  # arrival of every chunk that carried content (role-only ones excluded)
    status: int = 0  # HTTP status; 0 when none arrived
    prompt_tokens: int | None = None  # from the server's usage (last chunk), when it sent one
    completion_tokens: int | None = None
    backend: str | None = None  # the x-hybridgw-backend response header
    error: str | None = None  # type: connect, http_401, malformed_sse, stall, disconnect, no_content, ...
    error_detail: str = ""
    tenant: int | None = None
    warmup: bool = False
    wall_time: float = 0.0  # time.time() at send, to line the run up with server logs
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens (prefix-cache hits), when sent

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def output_tokens(self) -> int:
        """The server's completion_tokens; without usage, the content chunks (one token each)."""
        return self.completion_tokens if self.completion_tokens is not None else len(self.chunk_s)
