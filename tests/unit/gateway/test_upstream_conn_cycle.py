"""A closed upstream connection is freed by reference counting, not left to the cyclic GC: the connection
holds its httptools parser, which holds the connection's callbacks (bound methods), a cycle that lived as
long as the connection and outlived its close. Against a real socket server, under asyncio's and uvloop's
loops: closed by the server after its answer, closed by us (the pool's drop), and never connected."""
from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway.backends.upstream_wire import UpstreamConnection

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
REQUEST = b"POST /v1/x HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n"


def live_connections() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is UpstreamConnection)  # not isinstance: no proxies' warnings


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, close: bool) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n%s\r\nok" % (b"connection: close\r\n" if close else b""))
    await writer.drain()
    if close:
        writer.close()
    else:
        await reader.read()  # until the client closes


async def one_exchange(server_closes: bool) -> bytes:
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(lambda r, w: answer(r, w, server_closes), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = UpstreamConnection(loop)
    await loop.create_connection(lambda c=conn: c, "127.0.0.1", port)
    conn.send(REQUEST, False)
    await conn.head()
    body = await conn.read_all()
    if not server_closes:
        conn.close()  # as Pool._drop
    while not conn.closed or conn.transport is None or not conn.transport.is_closing():
        await asyncio.sleep(0)
    del conn
    for _ in range(5):  # connection_lost runs, the transport lets go
        await asyncio.sleep(0)
    server.close()
    await server.wait_closed()
    return body


async def never_connected() -> bytes:
    conn = UpstreamConnection(asyncio.get_running_loop())
    conn.close()  # as Pool._connect when the connect fails
    del conn
    return b"ok"


def without_cyclic_gc(loop: Callable[[], asyncio.AbstractEventLoop],
                      main: Callable[[], Coroutine[Any, Any, bytes]]) -> int:
    """The connections left alive once `main` ran with the cyclic GC off."""
    gc.collect()
    gc.disable()
    try:
        before = live_connections()
        with asyncio.Runner(loop_factory=loop) as runner:
            assert runner.run(main()) == b"ok"
            left = live_connections() - before
    finally:
        gc.enable()
    return left


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
def test_a_connection_the_server_closed_is_freed(loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    assert without_cyclic_gc(loop, lambda: one_exchange(server_closes=True)) == 0


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
def test_a_connection_we_closed_is_freed(loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    assert without_cyclic_gc(loop, lambda: one_exchange(server_closes=False)) == 0


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
def test_a_connection_that_never_connected_is_freed(loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    assert without_cyclic_gc(loop, never_connected) == 0
