"""Server-sent events of an OpenAI stream, fed as bytes arrive: which events carry content (a
role-only or empty delta does not), the usage of the last chunk, and what makes a stream malformed."""

from __future__ import annotations

from typing import Any

import orjson


class StreamError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def has_content(event: dict[str, Any]) -> bool:
    """A chat delta's content / reasoning / tool call, or a completion's text, that is not empty."""
    for choice in event.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if choice.get("text"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls")
        ):
            return True
    return False


class SseParser:
    """Feed raw body bytes with their arrival time; events split on blank lines (LF or CRLF)."""

    def __init__(self) -> None:
        self.content_times: list[float] = []
        self.usage: dict[str, Any] | None = None
        self.done = False
        self._buffer = b""

    def feed(self, data: bytes, now: float) -> None:
        # find, not `in`: on CPython 3.11 `bytes in bytes` first tries the operand as an int, raising and
        # clearing a TypeError (~1.8 k instructions) on every chunk (docs/benchmarks.md, round 6).
        self._buffer += data
        if self._buffer.find(b"\r") >= 0:  # the buffer's, not the read's: a read may end between \r and \n
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        if self._buffer.find(b"\n\n") < 0:
            return
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            self._event(event, now)

    def finish(self) -> None:
        if self._buffer.strip():
            self._event(self._buffer, float("nan") if not self.content_times else self.content_times[-1])
            self._buffer = b""

    def _event(self, raw: bytes, now: float) -> None:
        payload = b"\n".join(line[5:].lstrip(b" ") for line in raw.split(b"\n") if line.startswith(b"data:"))
        if not payload:
            return  # a comment (": keep-alive") or an event without data
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise StreamError("malformed_sse", f"an event is not JSON: {payload[:80]!r}") from None
        if not isinstance(event, dict):
            raise StreamError("malformed_sse", f"an event is not a JSON object: {payload[:80]!r}")
        if "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise StreamError("stream_error", f"the server sent an error mid-stream: {str(message)[:200]}")
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if has_content(event):
            self.content_times.append(now)
