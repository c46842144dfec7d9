"""The total connection bound leaves half the open-file limit to the ledger, keys and upstreams; a request
head over the size bound never reaches the app, however the reads split it (the protocol fed by hand)."""
from __future__ import annotations

import asyncio
import resource
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from gateway.http_guard import ConnectionBounds, connection_limit, guarded_protocol
from tests.support.fake_transport import FakeTransport


def test_the_total_is_at_most_half_the_open_file_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_limit(5) == 5
    if soft != resource.RLIM_INFINITY:
        assert connection_limit(10**9) == soft // 2


async def _feed(*reads: bytes) -> tuple[FakeTransport, bool]:
    """(the transport, whether a request reached the app) after the protocol parsed `reads`."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    config = uvicorn.Config(app, http="httptools", lifespan="off", log_level="error")
    config.load()
    protocol = guarded_protocol(ConnectionBounds(10, 0, 100))(config=config, server_state=ServerState(), app_state={})
    transport = FakeTransport()
    protocol.connection_made(transport)
    for data in reads:
        protocol.data_received(data)
    reached = protocol.cycle is not None
    protocol.connection_lost(None)
    return transport, reached


HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "


@pytest.mark.parametrize("reads", [
    (HEAD + b"a" * 70_000 + b"\r\n\r\n",),  # one read: counting across reads never saw it
    (HEAD + b"a" * 60_000, b"a" * 10_000 + b"\r\n\r\n"),  # the read that ends it was not counted either
])
def test_a_head_over_the_bound_never_reaches_the_app(reads: tuple[bytes, ...]) -> None:
    transport, reached = asyncio.run(_feed(*reads))
    assert transport.written.startswith(b"HTTP/1.1 431 ") and transport.closed and not reached


def test_a_head_within_the_bound_does_in_one_read_or_two() -> None:
    for reads in ((HEAD + b"a" * 60_000 + b"\r\n\r\n",), (HEAD + b"a" * 30_000, b"a" * 30_000 + b"\r\n\r\n")):
        transport, reached = asyncio.run(_feed(*reads))
        assert reached and b"431" not in transport.written
