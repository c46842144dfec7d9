"""The streaming HTTP/1.1 client on raw asyncio streams (keep-alive pool, chunked SSE): cheap per
chunk so the client is never the bottleneck (httpx costs ~8 ms CPU per engine step at 64 streams,
bench/engine_server.py measured); failures become an error type on the record, never an exception."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import orjson

from observability.bench.records import RequestRecord
from observability.bench.sse import SseParser, StreamError

PATHS = {"chat": "/chat/completions", "completions": "/completions"}
MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # e.g. /v1/chat/completions

    @classmethod
    def parse(cls, base_url: str, endpoint: str) -> Target:
        """`http://host:8000`, `http://host:8000/v1` or a full `.../v1/chat/completions` URL."""
        parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        path = parts.path.rstrip("/")
        if not path.endswith(PATHS[endpoint]):
            path = (path if path.endswith("/v1") else path + "/v1") + PATHS[endpoint]
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, path)


@dataclass(frozen=True)
class Sent:
    """What the runner knows about one request before it goes out."""

    body: bytes
    api_key: str | None
    base: RequestRecord  # plan fields filled in; times, results and errors are added here


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class Client:
    """One pool of keep-alive connections to one target; `send` never raises for a failed request."""

    def __init__(
        self,
        target: Target,
        headers: dict[str, str],
        idle_timeout_s: float,
        clock: Callable[[], float] = time.perf_counter,
        whole_body: bool = False,
    ) -> None:
        """`whole_body`: take a non-streamed JSON completion too, as one content chunk at its last byte
        (TTFT = E2E, the definition for non-streamed calls); otherwise it is a `not_streamed` error."""
        self.target, self.idle_timeout_s, self.clock = target, idle_timeout_s, clock
        self.whole_body = whole_body
        self._idle: list[Connection] = []
        self._ssl = ssl.create_default_context() if target.scheme == "https" else None
        fixed = {
            "Host": f"{target.host}:{target.port}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "User-Agent": "hybridgw-bench",
            **headers,
        }
        self._head = (
            f"POST {target.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        ).encode()

    async def _connect(self) -> tuple[Connection, bool]:
        """An idle keep-alive connection the server has not closed, else a new one; and which it was."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn, True
            conn.close()
        try:
            reader, writer = await asyncio.open_connection(
                self.target.host, self.target.port, ssl=self._ssl, limit=1 << 20
            )
        except OSError as exc:
            where = f"{self.target.host}:{self.target.port}"
            raise _Failure("connect", f"cannot connect to {where}: {exc.strerror or exc}") from None
        return Connection(reader, writer), False

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def send(
        self, sent: Sent, t0: float, on_content: Callable[[float], None] | None = None
    ) -> RequestRecord:
        """Send one streamed request; `t0` is the run's clock origin. `on_content` sees each content
        chunk's time as it arrives (for a stream read live and cancelled, not awaited to its end)."""
        result = _Result(send_s=self.clock() - t0, wall_time=time.time())
        conn: Connection | None = None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.idle_timeout_s) as deadline:
                def touch() -> None:
                    deadline.reschedule(loop.time() + self.idle_timeout_s)

                while True:
                    conn, reused = await self._connect()
                    conn.writer.write(self._request_bytes(sent))
                    try:
                        reusable = await self._read_response(conn, result, t0, touch, on_content)
                        break
                    except (asyncio.IncompleteReadError, ConnectionError):
                        if not reused or result.status:
                            raise
                        # The server closed this kept-alive connection as we reused it: not the
                        # request's failure; send it again on a new connection.
                        conn.close()
                        conn = None
            if reusable:
                self._idle.append(conn)
                conn = None
        except TimeoutError:
            result.fail(
                "stall" if result.status else "timeout",
                f"no byte for {self.idle_timeout_s:g} s" + (" mid-stream" if result.status else ""),
            )
        except _Failure as exc:
            result.fail(exc.kind, exc.detail)
        except asyncio.IncompleteReadError:
            result.fail("disconnect", "the server closed the connection before the response ended")
        except (ConnectionError, asyncio.LimitOverrunError, OSError) as exc:
            result.fail("disconnect", f"connection lost: {type(exc).__name__}: {exc}")
        finally:
            if conn is not None:
                conn.close()
        result.end_s = self.clock() - t0
        return result.record(sent.base)

    def _request_bytes(self, sent: Sent) -> bytes:
        auth = f"Authorization: Bearer {sent.api_key}\r\n".encode() if sent.api_key else b""
        return b"%s%sContent-Length: %d\r\n\r\n%s" % (self._head, auth, len(sent.body), sent.body)

    async def _read_response(
        self,
        conn: Connection,
        result: _Result,
        t0: float,
        touch: Callable[[], None],
        on_content: Callable[[float], None] | None = None,
    ) -> bool:
        """Read head and body into `result`; True when the connection may be reused."""
        head = await conn.reader.readuntil(b"\r\n\r\n")
        touch()
        status, headers = _parse_head(head)
        result.status = status
        result.backend = headers.get("x-hybridgw-backend")
        chunks = _body_chunks(conn.reader, headers)
        if status != 200:
            body = b""
            async for data in chunks:
                body = (body + data)[:MAX_ERROR_BODY]
            raise _Failure(f"http_{status}", _error_message(body))
        kind = headers.get("content-type", "")
        reusable = headers.get("connection", "").lower() != "close"
        if "json" in kind and self.whole_body:
            await self._read_whole(chunks, result, t0)
            return reusable
        if "json" in kind:  # a whole completion: the server ignored stream=true
            raise _Failure(
                "not_streamed", f"the server answered {kind}, not an event stream: does it stream?"
            )
        parser = SseParser()
        async for data in chunks:
            touch()
            now = self.clock() - t0
            seen = len(parser.content_times)
            try:
                parser.feed(data, now)
            except StreamError as exc:
                raise _Failure(exc.kind, str(exc)) from None
            if on_content is not None:
                for t in parser.content_times[seen:]:
                    on_content(t)
        parser.finish()
        result.chunk_s, result.usage = tuple(parser.content_times), parser.usage
        if not parser.content_times:
            raise _Failure("no_content", "the stream ended without a content chunk")
        return reusable

    async def _read_whole(self, chunks: AsyncIterator[bytes], result: _Result, t0: float) -> None:
        body = b""
        async for data in chunks:
            body += data
        result.chunk_s = (self.clock() - t0,)
        try:
            usage = orjson.loads(body).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            raise _Failure("bad_response", f"the body is not a JSON object: {body[:80]!r}") from None
        result.usage = usage if isinstance(usage, dict) else None


class _Failure(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


class _Result:
    """Mutable while one request runs; frozen into a RequestRecord at the end."""

    def __init__(self, send_s: float, wall_time: float) -> None:
        self.send_s, self.wall_time, self.end_s = send_s, wall_time, send_s
        self.status, self.backend = 0, None
        self.chunk_s: tuple[float, ...] = ()
        self.usage: dict[str, object] | None = None
        self.error: str | None = None
        self.detail = ""

    def fail(self, kind: str, detail: str) -> None:
        self.error, self.detail = kind, detail[:500]

    def record(self, base: RequestRecord) -> RequestRecord:
        usage = self.usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return replace(
            base,
            send_s=self.send_s,
            end_s=self.end_s,
            chunk_s=self.chunk_s,
            status=self.status,
            prompt_tokens=prompt if isinstance(prompt, int) else None,
            completion_tokens=completion if isinstance(completion, int) else None,
            backend=self.backend,
            error=self.error,
            error_detail=self.detail,
            wall_time=self.wall_time,
            cached_tokens=cached if isinstance(cached, int) and not isinstance(cached, bool) else None,
        )


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise _Failure("bad_response", f"not an HTTP response: {lines[0][:100]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The body as it arrives: chunked, by content-length, or until the server closes."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0], 16)
            except ValueError:
                raise _Failure("bad_response", f"bad chunk size line {size_line[:40]!r}") from None
            data = await reader.readexactly(size + 2)
            if size == 0:
                return
            yield data[:-2]
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 1 << 16))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(data)
            yield data
    else:
        while data := await reader.read(1 << 16):
            yield data


def _error_message(body: bytes) -> str:
    try:
        error = orjson.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return str(message)[:300] if message else body[:300].decode(errors="replace")
    except (orjson.JSONDecodeError, AttributeError):
        return body[:300].decode(errors="replace")
