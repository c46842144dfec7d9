"""One request at a time on the bench client's raw keep-alive connections, for callers that need more
than a RequestRecord: the response head, each body chunk as it comes, and the choice to cut the
connection (bench/soak.py: cuts mid-stream and before a slow answer, the gateway's request id)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

from observability.bench.client import Connection, Target, _body_chunks, _parse_head


class BenchPool:
    """Keep-alive connections to one target. An idle one older than `idle_expiry_s` is closed rather than
    reused: set it below the server's keep-alive timeout, so a request never goes out on a connection the
    server is closing at that moment."""

    def __init__(self, target: Target, idle_expiry_s: float = 2.0) -> None:
        self.target, self.idle_expiry_s = target, idle_expiry_s
        self._idle: deque[tuple[float, Connection]] = deque()  # oldest left, newest right
        self._line = f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n".encode()

    async def send(self, body: bytes, headers: dict[str, str]) -> BenchExchange:
        """Write one POST (on a fresh idle connection or a new one) and wait until it has left; raises
        OSError when no connection can be made (then nothing was sent)."""
        conn, reused = await self._connect()
        request = b"%s%sContent-Length: %d\r\n\r\n%s" % (
            self._line, "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode(), len(body), body)
        exchange = BenchExchange(self, conn, reused, request)
        await exchange.write()
        return exchange

    async def _connect(self) -> tuple[Connection, bool]:
        now = time.monotonic()
        while self._idle and now - self._idle[0][0] > self.idle_expiry_s:
            self._idle.popleft()[1].close()
        while self._idle:
            conn = self._idle.pop()[1]
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn, True
            conn.close()
        return await self.connect_new(), False

    async def connect_new(self) -> Connection:
        reader, writer = await asyncio.open_connection(self.target.host, self.target.port, limit=1 << 20)
        return Connection(reader, writer)

    def release(self, conn: Connection) -> None:
        self._idle.append((time.monotonic(), conn))

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[1].close()


class BenchExchange:
    """One request on one connection: `head()`, then `body()`; `close()` hands the connection back when
    the body was read to its end and the server keeps it, else closes it (a cut, from the server's side)."""

    def __init__(self, pool: BenchPool, conn: Connection, reused: bool, request: bytes) -> None:
        self.pool, self.conn, self.reused, self.request = pool, conn, reused, request
        self.status, self.headers, self.complete = 0, {}, False

    async def write(self) -> None:
        self.conn.writer.write(self.request)
        await self.conn.writer.drain()

    async def head(self) -> int:
        """Read the status line and headers. A kept-alive connection the server closed as it was reused
        (no byte of an answer) is not the request's failure: it goes again once, on a new connection."""
        try:
            head = await self.conn.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if not self.reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            self.conn.close()
            self.conn, self.reused = await self.pool.connect_new(), False
            await self.write()
            head = await self.conn.reader.readuntil(b"\r\n\r\n")
        self.status, self.headers = _parse_head(head)
        return self.status

    async def body(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive (chunked, by length, or to the close)."""
        async for data in _body_chunks(self.conn.reader, self.headers):
            yield data
        self.complete = True

    async def read(self) -> bytes:
        return b"".join([data async for data in self.body()])

    def close(self) -> None:
        if self.complete and self.headers.get("connection", "").lower() != "close" and not self.conn.reader.at_eof():
            self.pool.release(self.conn)
        else:
            self.conn.close()
