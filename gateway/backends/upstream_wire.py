"""One upstream HTTP/1.1 keep-alive connection as an asyncio Protocol: sends a request, parses the response
with httptools (Content-Length, chunked, or to the close; gzip/deflate decoded as it comes) and hands the
body to one reader, with one deadline timer at most and no task or stream object in between."""
from __future__ import annotations

import asyncio
import zlib

import httptools

_HIGH_WATER = 128 * 1024  # a stream's unread bytes before the socket is paused (as aiohttp's reader)
_MAX_HEAD = 256 * 1024  # llhttp sets no limit: a hostile upstream could grow our memory until first_byte_s


class ConnectionLost(ConnectionError):
    """The server closed the connection before its response ended."""


class BadResponse(Exception):
    """Bytes that are no HTTP/1.1 response (or a body its encoding cannot decode)."""


def _decoder(encoding: bytes, first: bytes) -> zlib._Decompress | None:
    """gzip, or deflate with its zlib header or without (raw, as some servers send it)."""
    if encoding == b"gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == b"deflate":
        return zlib.decompressobj(zlib.MAX_WBITS if first[:1] and first[0] & 0x0F == 8 else -zlib.MAX_WBITS)
    return None  # identity, or an encoding nobody asked for: passed on as it is (as aiohttp did)


class UpstreamConnection(asyncio.Protocol):
    """`send()` one request, then `head()`, then `read_any()` until b"" or `read_all()`; `reusable` says
    whether the pool may hand it out again. Failures (`set_exception`, a lost connection, a deadline) are
    raised by the pending or next read."""

    __slots__ = ("_body", "_complete", "_decode", "_encoding", "_exc", "_framed", "_headed", "_loop", "_parser",
                 "_paused", "_size", "_streaming", "_timer", "_tunnel", "_waiter", "closed", "got_byte",
                 "idle_since", "keep_alive", "status", "transport")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        # holds our callbacks (bound methods): a cycle, broken when the connection ends (_let_go)
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._tunnel: tuple[bytearray, asyncio.Future[None]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.idle_since = 0.0
        self._start(False)

    def _start(self, streaming: bool) -> None:
        self.status = 0
        self._body: list[bytes] = []
        self._size = 0
        self._headed = self._complete = self._framed = self._paused = self.got_byte = self.keep_alive = False
        self._streaming = streaming
        self._encoding = b""
        self._decode: zlib._Decompress | None = None
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- the caller's side ------------------------------------------------------------------------------
    def send(self, data: bytes, streaming: bool) -> None:
        self._start(streaming)
        if self.closed or self.transport is None:
            self._exc = ConnectionLost("the connection was closed before the request was sent")
            return
        self.transport.write(data)

    def arm(self, when: float) -> None:
        """One deadline (loop time) for whatever is awaited next: past it the read fails with TimeoutError."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self.set_exception(TimeoutError("no response in time"))

    def set_exception(self, exc: BaseException) -> None:
        """Fail the pending (or next) read and close the connection (gateway/backends/read_watch.py)."""
        self._fail(exc)
        self.close()

    @property
    def reusable(self) -> bool:
        return (self._complete and self.keep_alive and self._exc is None and not self.closed and not self._body
                and self.transport is not None and not self.transport.get_write_buffer_size())  # all of ours sent

    async def head(self) -> int:
        while not self._headed:
            if self._exc is not None:
                raise self._exc
            await self._wait()
        return self.status

    async def read_any(self) -> bytes:
        """Whatever body has arrived (several frames under load); b"" once the body ended."""
        while True:
            body = self._body
            if body:
                self._body, self._size = [], 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return body[0] if len(body) == 1 else b"".join(body)
            if self._exc is not None:
                raise self._exc
            if self._complete:
                return b""
            self._waiter = waiter = self._loop.create_future()  # _wait() inline: no coroutine a read
            await waiter

    async def read_all(self) -> bytes:
        self._streaming = False  # the whole body is wanted: a paused socket would never deliver its end
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        while not self._complete:
            if self._exc is not None:
                raise self._exc
            await self._wait()
        body, self._body = self._body, []
        return body[0] if len(body) == 1 else b"".join(body)

    async def tunnel(self, request: bytes) -> bytes:
        """Send a proxy's CONNECT and return its reply's status line (before any TLS on this connection)."""
        assert self.transport is not None
        done: asyncio.Future[None] = self._loop.create_future()
        self._tunnel = (bytearray(), done)
        self.transport.write(request)
        try:
            await done
            return bytes(self._tunnel[0]).split(b"\r\n", 1)[0]
        finally:
            # A failure (the proxy closed first) is raised from `done`, which holds it, its traceback this
            # frame: neither it nor this connection keeps the future (tests/unit/gateway/test_upstream_tunnel_cycle.py).
            self._tunnel = None
            del done

    def close(self) -> None:
        self.closed = True
        self.disarm()
        if self.transport is not None:
            self.transport.close()  # connection_lost follows, and lets go of the parser
        else:
            self._parser = None  # never connected: no connection_lost will come

    def discard(self) -> None:
        """Closed for good by the pool (nothing reads it after): close, and forget a failure already raised —
        its traceback holds a read's frame, whose `self` is this connection: a cycle
        (tests/integration/gateway/test_error_path_cycles.py) — and the parser now, not at connection_lost:
        a TLS handshake in a proxy's tunnel that the proxy cuts (it answered CONNECT, then could not reach the
        upstream) gets none under uvloop (tests/unit/gateway/test_upstream_tunnel_cycle.py), and so neither
        lets go of the transport, which holds us: we let go of it."""
        self.close()
        self._exc = None
        self._parser = None
        self.transport = None


    async def _wait(self) -> None:
        self._waiter = waiter = self._loop.create_future()
        await waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None and not self._complete:
            self._exc = exc
        self._wake()

    # -- asyncio's side ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel[0].extend(data)
            if b"\r\n\r\n" in self._tunnel[0] and not self._tunnel[1].done():
                self._tunnel[1].set_result(None)
            return
        parser = self._parser
        if self._complete or parser is None:  # bytes after the response (no HTTP/1.1 server sends them), or
            self.close()  # after the connection ended
            return
        self.got_byte = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.set_exception(BadResponse(f"malformed response: {exc}"))
        except httptools.HttpParserUpgrade:  # a 101 or CONNECT answer: not an API response
            self.set_exception(BadResponse(f"the upstream switched protocols ({parser.get_status_code()})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.disarm()
        if self._tunnel is not None and not self._tunnel[1].done():
            self._tunnel[1].set_exception(ConnectionLost("the proxy closed the connection"))
        if self._headed and not self._framed and not self._complete and exc is None:  # a body that ends at the close
            self.on_message_complete()  # (a reset is no end: the body is cut, the read fails)
            self.keep_alive = False
        self._fail(ConnectionLost("the server closed the connection" + (f" ({exc})" if exc else "")))
        # The parser holds our bound methods and we hold it: let go, so reference counting frees the closed
        # connection (it was ~0.06 objects' worth a request left to the cyclic GC: tests/unit/gateway/
        # test_upstream_conn_cycle.py). No data_received follows connection_lost.
        self._parser = None

    # -- httptools' callbacks ---------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value)  # the head's size until its end (the body's after)
        if self._size > _MAX_HEAD:  # failed first (the read raises this), then the parse stopped
            self.set_exception(BadResponse(f"response headers over {_MAX_HEAD // 1024} KiB"))
            raise BadResponse("headers too large")
        name = name.lower()
        if name == b"content-encoding":
            self._encoding = value.strip().lower()
        elif name == b"content-length" or name == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        assert self._parser is not None  # a callback of the parser's feed_data
        self.status, self._size = self._parser.get_status_code(), 0
        if self.status < 200:  # 1xx: an interim response; the real one follows
            self._encoding, self._framed = b"", False
            return
        self._headed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._encoding:
            try:
                if self._decode is None:
                    self._decode = _decoder(self._encoding, body)
                    if self._decode is None:
                        self._encoding = b""
                if self._decode is not None:
                    body = self._decode.decompress(body)
            except zlib.error as exc:
                self.set_exception(BadResponse(f"cannot decode the {self._encoding.decode()} body: {exc}"))
                return
        if body:
            self._body.append(body)
            self._size += len(body)
            if self._streaming and self._size > _HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            waiter = self._waiter  # _wake() inline: on_body runs once a read
            if waiter is not None:
                self._waiter = None
                if not waiter.done():
                    waiter.set_result(None)

    def on_message_complete(self) -> None:
        if not self._headed:
            return  # the end of a 1xx
        if self._decode is not None:
            try:
                tail = self._decode.flush()
            except zlib.error:
                tail = b""
            if not self._decode.eof:  # cut short (or corrupt): never a shorter answer taken for the whole
                self.set_exception(BadResponse(f"the {self._encoding.decode()} body ended early"))
                return
            if tail:
                self._body.append(tail)
        self._complete = True
        self.keep_alive = self._parser is not None and self._parser.should_keep_alive()
        self._wake()
