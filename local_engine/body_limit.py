"""The engine server's request body limit: an ASGI middleware that answers 413 (OpenAI-shaped)
before a body larger than the limit is parsed, whether it says its length or arrives chunked."""
from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # as the gateway's


class BodyLimit:
    """Bodies up to `max_bytes` pass through (read whole first when chunked); larger ones get 413."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                await self._refuse(send, "the Content-Length header is not a number"
                                   if not length.isdigit() else None)
                return
            await self.app(scope, receive, send)  # the server reads no more than it said
            return
        buffered, complete = await self._read(receive)
        if not complete:
            await self._refuse(send)
            return
        await self.app(scope, _replay(buffered, receive), send)

    async def _read(self, receive: Receive) -> tuple[list[Message], bool]:
        """The body's messages while their total stays within the limit; False once it does not."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, True  # a disconnect: the app sees it
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return messages, False
            if not message.get("more_body", False):
                return messages, True

    async def _refuse(self, send: Send, message: str | None = None) -> None:
        status = 400 if message else 413
        text = message or f"the request body is larger than this engine's limit of {self.max_bytes} bytes"
        body = json.dumps({"error": {"message": text, "type": "invalid_request_error", "param": None,
                                     "code": "invalid_value" if message else "request_too_large"}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """The buffered messages first, then the live channel (a streaming route watches it for disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
