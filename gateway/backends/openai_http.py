"""Backend for any OpenAI-compatible HTTP server (OpenAI, vLLM, SGLang, TRT-LLM, NIM, our engine).

Our own HTTP/1.1 client (upstream_pool.py, upstream_wire.py: pooled keep-alive connections parsed by httptools,
~1/3 fewer instructions per relayed frame than aiohttp, docs/benchmarks.md); separate deadlines for connect,
first byte, the gap between chunks and (non-streamed) the whole body; SSE relayed as the upstream's own payload
bytes. An error object in place of an answer (a 200 error body, an in-band `data: {"error": …}`
event) or a 200 body that is no answer (`{}`, no `choices`) is an UpstreamError, never a relayed success.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.backends.answer_shape import shape_problem
from gateway.backends.base import BackendCounters, BackendState, Chunks, UpstreamRequest, UpstreamResponse
from gateway.backends.read_watch import ReadWatch
from gateway.backends.stream_frames import error_object, sort_out
from gateway.backends.upstream_pool import ConnectTimeout, Pool, Unreachable, request_head, target
from gateway.backends.upstream_wire import BadResponse, UpstreamConnection
from gateway.catalog import ResolvedBackend
from gateway.errors import UpstreamError, redacted
from gateway.sse import DONE_PAYLOAD, EventTooLarge, FrameSplitter


def _error_fields(status: int, content: bytes) -> tuple[str, str | None, str | None]:
    """(message, param, code) of an OpenAI-shaped error body or plain text."""
    message, param, code = content.decode("utf-8", "replace")[:500] or f"HTTP {status}", None, None
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            param, code = err.get("param"), err.get("code")
        elif isinstance(err, str):
            message = err
    return message, param if isinstance(param, str) else None, code if isinstance(code, str) else None


def _error_from_body(backend: str, status: int, content: bytes) -> UpstreamError:
    """The upstream's own message (OpenAI-shaped body or plain text) under its status."""
    message, param, code = _error_fields(status, content)
    return UpstreamError(f"upstream {backend} returned {status}: {message}", backend=backend,
                         upstream_status=status, param=param, code=code)


def _failure(backend: str, status: int, content: bytes) -> UpstreamError:
    """An error status, or a redirect: never followed, since the prompt and our key go only to the
    address the policy names (the client sees a 502, as for any upstream that does not answer)."""
    if status < 400:
        return UpstreamError(f"upstream {backend} answered {status}, a redirect; redirects are not followed: "
                             "set the backend's base_url to the address that serves the API",
                             backend=backend, kind="protocol")
    return _error_from_body(backend, status, content)


def _in_band_error(backend: str, payload: bytes) -> UpstreamError:
    """An error event after the stream began (an engine whose core died, a provider's overload)."""
    message, param, code = _error_fields(502, payload)
    return UpstreamError(f"upstream {backend} failed mid-stream: {message}", backend=backend, kind="in_band",
                         param=param, code=code or "upstream_in_band_error", after_first_byte=True)


def _transport_error(backend: str, exc: BaseException, after_first_byte: bool = False) -> UpstreamError:
    if isinstance(exc, ConnectTimeout):
        kind, what = "connect", "connect timeout"
    elif isinstance(exc, TimeoutError):
        kind, what = "timeout", "timed out"
    elif isinstance(exc, Unreachable):
        kind, what = "connect", f"unreachable ({exc})"
    else:
        kind, what = "protocol", f"connection failed ({type(exc).__name__}: {exc})"
    return UpstreamError(f"upstream {backend} {what}", backend=backend, kind=kind,
                         after_first_byte=after_first_byte)


_FAILURES = (OSError, BadResponse)  # TimeoutError, ConnectionLost, ConnectTimeout and Unreachable are OSErrors
_PATHS = ("chat/completions", "completions", "embeddings")


def _header_lines(request: UpstreamRequest, stream: bool) -> bytes | None:
    """The per-request headers; None if a value holds a CR or LF (it would split into a header of its own)."""
    lines = f"x-request-id: {request.request_id}\r\n"
    if stream:
        lines += "accept: text/event-stream\r\n"
    for name, value in request.headers.items():
        lines += f"{name}: {value}\r\n"
    count = len(request.headers) + 1 + stream
    return lines.encode() if lines.count("\n") == count and lines.count("\r") == count else None


class OpenAIHTTPBackend:
    def __init__(self, spec: ResolvedBackend) -> None:
        assert spec.base_url, "an OpenAI-compatible backend needs a base_url"
        self.name = spec.name
        self.kind = spec.kind
        self.spec = spec
        self._pool: Pool | None = None
        self._heads: dict[str, bytes] = {}
        self._counters = BackendCounters()

    async def open(self) -> None:
        """The pool, and each path's request line and fixed headers; HTTP(S)_PROXY / NO_PROXY and the
        CAs for https are read here, once."""
        base_url = self.spec.base_url or ""
        where = target(base_url)
        fixed = {"content-type": "application/json", "accept": "*/*", "accept-encoding": "gzip, deflate"}
        if self.spec.api_key:
            fixed["authorization"] = f"Bearer {self.spec.api_key}"
        base_path = urlsplit(base_url).path.rstrip("/")
        self._heads = {p: request_head(where, f"{base_path}/{p}", fixed) for p in _PATHS}
        self._pool = Pool(where, self.spec.max_connections, self.spec.timeouts.connect_s)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _open_pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError(f"backend {self.name} is not open")
        return self._pool

    def state(self) -> BackendState:
        return self._counters.snapshot(self.name, self.kind)

    def _fail(self, error: UpstreamError) -> UpstreamError:
        self._counters.failures += 1
        error = redacted(error, self.spec.api_key)
        self._counters.last_error = error.message
        return error

    async def _exchange(self, pool: Pool, request: UpstreamRequest, stream: bool, first: float) -> UpstreamConnection:
        """Send the request and wait for the response head (by `first`, loop time). A reused connection
        that fails before any byte came back (the server closed it as we sent: the keep-alive race) is
        retried once on a new one; never after a byte arrived."""
        body, lines = orjson.dumps(request.body), _header_lines(request, stream)
        if lines is None:
            raise BadResponse("a request header holds a line break")  # ours: never sent, never a 500
        data = b"%s%scontent-length: %d\r\n\r\n%s" % (self._heads[request.path], lines, len(body), body)
        conn, fresh = pool.take_idle(), False
        reused = conn is not None
        while True:
            try:
                if conn is None:
                    async with asyncio.timeout_at(first):
                        conn, reused = await pool.acquire(fresh)
                conn.send(data, stream)
                conn.arm(first)
                await conn.head()
                return conn
            except BaseException as exc:
                if conn is not None:
                    pool.release(conn)
                if fresh or not reused or conn is None or conn.got_byte or isinstance(exc, TimeoutError) \
                        or not isinstance(exc, ConnectionError):
                    raise
                conn, fresh = None, True

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        self._counters.requests += 1
        self._counters.in_flight += 1
        try:
            content, status = await self._post(self._open_pool(), request)
            if status >= 300:
                raise self._fail(_failure(self.name, status, content))
            try:
                data: Any = orjson.loads(content)
            except orjson.JSONDecodeError:
                raise self._fail(UpstreamError(f"upstream {self.name} sent a body that is not JSON",
                                               backend=self.name, kind="protocol")) from None
            if isinstance(data, dict) and error_object(content):  # a 200 that is an error: no answer
                raise self._fail(_error_from_body(self.name, 502, content))
            if problem := shape_problem(request.path, data):  # `{}`, a list, no choices: no answer either
                raise self._fail(UpstreamError(f"upstream {self.name} answered {status} without an answer: "
                                               f"{problem}", backend=self.name, kind="protocol"))
            return UpstreamResponse(content, data, status)
        finally:
            self._counters.in_flight -= 1

    async def _post(self, pool: Pool, request: UpstreamRequest) -> tuple[bytes, int]:
        """A non-streamed call: response headers within first_byte_s, the whole body within total_s
        of sending. A timeout after the headers is no retry case (`after_first_byte`)."""
        t = self.spec.timeouts
        now = asyncio.get_running_loop().time()
        try:
            conn = await self._exchange(pool, request, False, now + min(t.first_byte_s, t.total_s))
        except _FAILURES as exc:
            raise self._fail(_transport_error(self.name, exc)) from None
        try:
            conn.arm(now + t.total_s)
            return await conn.read_all(), conn.status
        except _FAILURES as exc:
            if isinstance(exc, TimeoutError):
                error = UpstreamError(f"upstream {self.name} did not finish its response within {t.total_s:g} s",
                                      backend=self.name, kind="timeout", after_first_byte=True)
            else:
                error = _transport_error(self.name, exc, after_first_byte=True)
            raise self._fail(error) from None
        finally:
            pool.release(conn)

    async def stream(self, request: UpstreamRequest) -> AsyncIterator[Chunks]:
        """One generator from the call to [DONE], reading the connection itself: each generator or iterator
        between the relay and the connection would cost every chunk a resume of its own."""
        self._counters.requests += 1
        self._counters.in_flight += 1
        started, conn, watch = False, None, None
        timeouts, loop, pool = self.spec.timeouts, asyncio.get_running_loop(), self._open_pool()
        try:
            conn = await self._exchange(pool, request, True, loop.time() + timeouts.first_byte_s)
            if conn.status >= 300:
                content = await conn.read_all()  # still within first_byte_s
                raise self._fail(_failure(self.name, conn.status, content))
            splitter = FrameSplitter()
            while True:
                if not started:  # until the first chunk: first_byte_s for each read
                    conn.arm(loop.time() + timeouts.first_byte_s)
                    piece = await conn.read_any()  # whatever has arrived: several frames under load
                else:  # then between_chunks_s, kept by one timer per stream (gateway/backends/read_watch.py)
                    if watch is None:
                        conn.disarm()
                        watch = ReadWatch(conn, timeouts.between_chunks_s)
                    watch.since = loop.time()
                    piece = await conn.read_any()
                    watch.since = None
                payloads, end = sort_out(splitter.feed(piece) if piece else splitter.flush())  # b"": body ended
                if payloads:
                    started = True
                    yield payloads  # one read's frames go on in one write (before the end or an error)
                if end is None:
                    if not piece and not started:  # a 204, or a 200 whose stream ended before any event
                        raise self._fail(UpstreamError(f"upstream {self.name} answered {conn.status} without an "
                                                       "answer: the stream ended before its first event",
                                                       backend=self.name, kind="protocol"))
                    if not piece:
                        return  # ended without [DONE]: accepted, as many servers do
                    continue
                if end == DONE_PAYLOAD:
                    await self._drain(conn)
                    return
                raise self._fail(_in_band_error(self.name, end) if started else _error_from_body(self.name, 502, end))
        except _FAILURES as exc:
            raise self._fail(_transport_error(self.name, exc, after_first_byte=started)) from None
        except EventTooLarge as exc:
            raise self._fail(UpstreamError(f"upstream {self.name} broke the SSE protocol: {exc}",
                                           backend=self.name, kind="protocol", after_first_byte=started)) from None
        finally:
            self._counters.in_flight -= 1
            if watch is not None:
                watch.stop()
            if conn is not None:
                pool.release(conn)  # pooled only if the body was read to its end (after [DONE]); else closed

    async def _drain(self, conn: UpstreamConnection) -> None:
        """Read the body's end after [DONE] so the keep-alive connection goes back to the pool. The
        answer is complete by now: a connection that fails or stalls here is closed, never an error."""
        conn.arm(asyncio.get_running_loop().time() + self.spec.timeouts.between_chunks_s)
        try:
            while await conn.read_any():
                pass
        except _FAILURES:
            pass  # the caller releases the connection, which closes it
