"""Backend for any OpenAI-compatible HTTP server (OpenAI, vLLM, SGLang, TRT-LLM, NIM, our engine).

aiohttp with one pooled keep-alive session per backend (a quarter of httpx's CPU per call, measured in
bench/upstream_clients.py); separate deadlines for connect, first byte,
the gap between chunks and (non-streamed) the whole body; SSE relayed as the upstream's own payload
bytes. An error object in place of an answer (a 200 error body, an in-band `data: {"error": …}`
event) or a 200 body that is no answer (`{}`, no `choices`) is an UpstreamError, never a relayed success.
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import certifi
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from gateway.backends.answer_shape import shape_problem
from gateway.backends.base import BackendCounters, BackendState, Chunks, UpstreamRequest, UpstreamResponse
from gateway.backends.read_watch import ReadWatch
from gateway.backends.stream_frames import error_object, sort_out
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
    if isinstance(exc, TimeoutError):  # aiohttp's connect and socket-read timeouts are TimeoutErrors too
        kind, what = ("connect", "connect timeout") if isinstance(exc, aiohttp.ConnectionTimeoutError) else ("timeout", "timed out")
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind, what = "connect", f"unreachable ({exc})"
    else:
        kind, what = "protocol", f"connection failed ({type(exc).__name__}: {exc})"
    return UpstreamError(f"upstream {backend} {what}", backend=backend, kind=kind,
                         after_first_byte=after_first_byte)


def _env_proxy(base_url: str) -> dict[str, Any]:
    """The proxy the environment names for this backend (as httpx, the client before, honoured it), read
    once: aiohttp's trust_env would parse the environment on every request."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(base_url))
    except LookupError:  # no proxy for this URL (none set, or NO_PROXY covers it)
        return {}
    return {"proxy": proxy, "proxy_auth": auth}


def tls_context(base_url: str) -> ssl.SSLContext | bool:
    """certifi's CAs for an https backend, as httpx (the client before) used: a host without system CA
    files still reaches hosted APIs. Loaded once per backend, at open."""
    return ssl.create_default_context(cafile=certifi.where()) if base_url.startswith("https:") else True


_KEEPALIVE_S = 4.0
_FAILURES = (aiohttp.ClientError, TimeoutError)


class OpenAIHTTPBackend:
    def __init__(self, spec: ResolvedBackend) -> None:
        assert spec.base_url, "an OpenAI-compatible backend needs a base_url"
        self.name = spec.name
        self.kind = spec.kind
        self.spec = spec
        self._session: aiohttp.ClientSession | None = None
        self._proxy: dict[str, Any] = {}  # proxy= / proxy_auth= from HTTP(S)_PROXY and NO_PROXY, read at open
        self._urls = {p: f"{spec.base_url}/{p}" for p in ("chat/completions", "completions", "embeddings")}
        self._counters = BackendCounters()

    async def open(self) -> None:
        t = self.spec.timeouts
        headers = {"content-type": "application/json"}
        if self.spec.api_key:
            headers["authorization"] = f"Bearer {self.spec.api_key}"
        # Idle connections are dropped before uvicorn's 5 s keep-alive (vLLM, SGLang, our engine) closes
        # them: a request sent as the server closes fails with no response (the soak saw 1 in 19,000).
        connector = aiohttp.TCPConnector(limit=self.spec.max_connections, limit_per_host=0,
                                         keepalive_timeout=_KEEPALIVE_S, ssl=tls_context(self.spec.base_url or ""))
        # The session's default; each call passes its own (first byte: an asyncio deadline around it).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s,
                                        sock_read=max(t.first_byte_s, t.between_chunks_s))
        # Non-streamed bodies: only the total deadline applies, however long the upstream pauses.
        self._body_timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s, sock_read=t.total_s)
        # Streams: no per-read timer in aiohttp (re-armed on every chunk); stream() keeps the deadlines.
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s, sock_read=None)
        self._session = aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout,
                                              skip_auto_headers=("user-agent",), auto_decompress=True)
        self._proxy = _env_proxy(self.spec.base_url or "")

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"backend {self.name} is not open")
        return self._session

    def state(self) -> BackendState:
        return self._counters.snapshot(self.name, self.kind)

    def _fail(self, error: UpstreamError) -> UpstreamError:
        self._counters.failures += 1
        error = redacted(error, self.spec.api_key)
        self._counters.last_error = error.message
        return error

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        self._counters.requests += 1
        self._counters.in_flight += 1
        try:
            content, status = await self._post(self._open_session(), request)
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

    async def _post(self, session: aiohttp.ClientSession, request: UpstreamRequest) -> tuple[bytes, int]:
        """A non-streamed call: response headers within first_byte_s, the whole body within total_s
        of sending. A timeout after the headers is no retry case (`after_first_byte`). One deadline,
        moved once the headers are in (an asyncio.timeout costs ~6 µs to enter and leave)."""
        t = self.spec.timeouts
        deadline = asyncio.get_running_loop().time() + t.total_s
        headers = {"x-request-id": request.request_id, **request.headers}
        response = None
        try:
            async with asyncio.timeout(min(t.first_byte_s, t.total_s)) as limit:
                response = await session.post(self._urls[request.path], data=orjson.dumps(request.body),
                                              headers=headers, timeout=self._body_timeout, allow_redirects=False,
                                              **self._proxy)
                limit.reschedule(deadline)
                try:
                    content = await response.read()
                finally:
                    response.release()
        except _FAILURES as exc:
            if response is None:
                raise self._fail(_transport_error(self.name, exc)) from None
            if isinstance(exc, TimeoutError):
                error = UpstreamError(f"upstream {self.name} did not finish its response within {t.total_s:g} s",
                                      backend=self.name, kind="timeout", after_first_byte=True)
            else:
                error = _transport_error(self.name, exc, after_first_byte=True)
            raise self._fail(error) from None
        return content, response.status

    async def _open_stream(self, session: aiohttp.ClientSession, request: UpstreamRequest) -> aiohttp.ClientResponse:
        headers = {"x-request-id": request.request_id, "accept": "text/event-stream", **request.headers}
        try:
            async with asyncio.timeout(self.spec.timeouts.first_byte_s):
                response = await session.post(self._urls[request.path], data=orjson.dumps(request.body),
                                              headers=headers, timeout=self._stream_timeout, allow_redirects=False,
                                              **self._proxy)
                if response.status >= 300:
                    content = await response.read()
        except _FAILURES as exc:
            raise self._fail(_transport_error(self.name, exc)) from None
        if response.status >= 300:
            response.release()
            raise self._fail(_failure(self.name, response.status, content))
        return response

    async def stream(self, request: UpstreamRequest) -> AsyncIterator[Chunks]:
        """One generator from the call to [DONE], reading the body itself: each generator or iterator
        between the relay and aiohttp's reader would cost every chunk a resume of its own."""
        self._counters.requests += 1
        self._counters.in_flight += 1
        started, response, watch = False, None, None
        timeouts, loop = self.spec.timeouts, asyncio.get_running_loop()
        try:
            response = await self._open_stream(self._open_session(), request)
            content, splitter = response.content, FrameSplitter()
            while True:
                if not started:  # until the first chunk: first_byte_s for each read
                    async with asyncio.timeout(timeouts.first_byte_s):
                        piece = await content.readany()  # whatever has arrived: several frames under load
                else:  # then between_chunks_s, kept by one timer per stream (gateway/backends/read_watch.py)
                    if watch is None:
                        watch = ReadWatch(content, timeouts.between_chunks_s)
                    watch.since = loop.time()
                    piece = await content.readany()
                    watch.since = None
                payloads, end = sort_out(splitter.feed(piece) if piece else splitter.flush())  # b"": body ended
                if payloads:
                    started = True
                    yield payloads  # one read's frames go on in one write (before the end or an error)
                if end is None:
                    if not piece:
                        return  # ended without [DONE]: accepted, as many servers do
                    continue
                if end == DONE_PAYLOAD:
                    await self._drain(content)
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
            if response is not None:
                response.close()  # after [DONE] the body was read to its end: the connection is pooled

    async def _drain(self, content: aiohttp.StreamReader) -> None:
        """Read the body's end after [DONE] so the keep-alive connection goes back to the pool. The
        answer is complete by now: a connection that fails or stalls here is closed, never an error."""
        try:
            async with asyncio.timeout(self.spec.timeouts.between_chunks_s):
                while await content.readany():
                    pass
        except _FAILURES:
            pass  # the caller closes the response, and with it this connection
