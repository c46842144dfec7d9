"""proxy.request_headers reads a request's headers as Starlette's Headers does (get: the first value of a
name; items: every pair; `in`), and auth.authorization still refuses two Authorization headers through it."""
from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from gateway.auth import authorization
from gateway.errors import InvalidRequest
from gateway.proxy import request_headers

RAW = [(b"host", b"gw"), (b"authorization", b"Bearer sk-1"), (b"x-request-id", b"abc"), (b"x-tier", b"gold"),
       (b"content-length", b"90"), (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]


@pytest.mark.parametrize("raw", [
    RAW,
    RAW + [(b"x-tier", b"silver")],  # a repeated x-* header: items() keeps both, get() the first
    RAW + [(b"x-caf\xe9", b"\xe9t\xe9")],  # latin-1 bytes
    [],
])
def test_the_same_answers_as_starlettes_headers(raw: list[tuple[bytes, bytes]]) -> None:
    ours, theirs = request_headers(raw), Headers(raw=raw)
    for name in ("authorization", "x-request-id", "x-tier", "content-length", "traceparent", "x-café", "absent"):
        assert ours.get(name) == theirs.get(name)
        assert (name in ours) == (name in theirs)
    assert list(ours.items()) == list(theirs.items())
    assert {k: v for k, v in ours.items() if k.startswith("x-")} == {k: v for k, v in theirs.items()
                                                                       if k.startswith("x-")}


def test_two_authorization_headers_are_still_refused() -> None:
    with pytest.raises(InvalidRequest) as refused:
        authorization(request_headers(RAW + [(b"authorization", b"Bearer sk-2")]))
    assert refused.value.param == "authorization"
    assert authorization(request_headers(RAW)) == "Bearer sk-1"
    assert authorization(request_headers([])) is None
