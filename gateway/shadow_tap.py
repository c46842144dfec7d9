"""Where a served request meets shadowing: `tap` (the one call in the request path) hands a sampled
chat request's answer to the Shadower once the client has it, and costs a lookup when not sampled.
A streamed answer is read from the bytes the client was sent (a tee on ASGI `send`)."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.stream_tally import payload_text, response_text
from policies.shadow_spec import sampled

if TYPE_CHECKING:
    from gateway.exchange import Exchange
    from gateway.services import Services


def tap(svc: Services, ex: Exchange, body: dict[str, Any], response: Response) -> Response:
    """`response` as it is; for a request its team's `shadow` samples, wrapped to pass its answer on."""
    compiled = ex.route.policy if ex.route is not None else None
    spec = compiled.shadowed_teams.get(ex.team) if compiled is not None else None
    if spec is None or ex.endpoint != "chat" or not sampled(ex.request_id, spec.seed, spec.share):
        return response
    shadower = svc.shadow
    if shadower is None:
        return response
    if not ex.stream:  # already recorded (finish ran): the answer is the body the client gets
        shadower.offer(ex, body, spec, _json_text(response.body))
        return response
    return StreamTap(response, lambda raw: shadower.offer(ex, body, spec, sse_text(raw)))  # type: ignore[return-value]


class StreamTap:
    """An ASGI wrapper: relays every message unchanged and keeps the body bytes; when the inner response
    is done (its usage record written), `done` gets them. Only sampled streams are wrapped."""

    def __init__(self, inner: Response, done: Callable[[bytes], None]) -> None:
        self.inner = inner
        self.done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts: list[bytes] = []

        async def tee(message: Message) -> None:
            if message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            await send(message)

        try:
            await self.inner(scope, receive, tee)
        finally:
            self.done(b"".join(parts))


def _json_text(raw: bytes | memoryview) -> str:
    try:
        data = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError:
        return ""
    return response_text(data) if isinstance(data, dict) else ""


def sse_text(raw: bytes) -> str:
    """The assistant's text of a relayed chat stream (every `data:` event's deltas, in order)."""
    out = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload and payload != b"[DONE]":
                out.append(payload_text(payload))
    return "".join(out)
