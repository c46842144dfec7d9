"""The non-streamed answer builds its own head (gateway/proxy.py AnsweredResponse): byte for byte what
Starlette's Response built from the same headers and body, so clients see the same answer."""
from __future__ import annotations

from starlette.responses import Response

from gateway.exchange import Exchange
from gateway.proxy import AnsweredResponse


def test_the_head_is_starlettes() -> None:
    ex = Exchange.begin("chat", "client-id-1")
    body = b'{"id":"x","choices":[]}'
    ours = AnsweredResponse(None, ex, body)  # type: ignore[arg-type]
    theirs = Response(body, status_code=200, headers=ex.response_headers(), media_type="application/json")
    assert ours.raw_headers == theirs.raw_headers and ours.body == theirs.body
    assert ours.headers["content-length"] == str(len(body))

