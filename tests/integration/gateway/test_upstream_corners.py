"""The upstream client's less travelled corners: a connect that never completes (a listener whose backlog is
full; a server that never answers the TLS handshake), an https:// proxy (TLS to the proxy itself, for
plain HTTP and for an https upstream tunnelled inside it), chunked trailers (one named content-encoding
must not switch decoding), a 204 and a 304 with no body on a kept-alive connection, and an upstream that
shuts its write side after the body."""
from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.backends.upstream_pool import ConnectTimeout, Pool, Proxy, Target, Unreachable
from gateway.errors import UpstreamError
from policies.schema import Timeouts
from tests.integration.gateway.test_upstream_client import CHAT, SSE, _frames, run
from tests.integration.gateway.test_upstream_routes import _call
from tests.support.raw_upstream import (
    ANSWER,
    ConnectProxy,
    HalfClose,
    Hold,
    RawUpstream,
    client_tls,
    full_backlog,
    make_certs,
    reply,
    server_tls,
    sse,
)

RUNNERS = pytest.mark.parametrize("loop_run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def backlog_port() -> Iterator[int]:
    with full_backlog() as port:
        yield port


async def _error(call: Awaitable[Any]) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await call
    return info.value


# -- a connect that never completes --------------------------------------------------------------------
@RUNNERS
def test_a_listener_whose_backlog_is_full_is_a_connect_timeout(backlog_port: int, loop_run: Any) -> None:
    async def main() -> UpstreamError:
        from gateway.catalog import ResolvedBackend
        spec = ResolvedBackend("up", "openai", f"http://127.0.0.1:{backlog_port}/v1", None, None,
                               timeouts=Timeouts(connect_s=0.3))
        backend = OpenAIHTTPBackend(spec)
        await backend.open()
        try:
            return await _error(backend.complete(CHAT))
        finally:
            await backend.aclose()
    error = loop_run(main())
    assert error.kind == "connect" and "connect timeout" in error.message and not error.after_first_byte


@RUNNERS
def test_a_tls_handshake_never_answered_is_a_connect_timeout(certs: Path, loop_run: Any) -> None:
    async def main() -> None:
        upstream = RawUpstream(reply(ANSWER))  # plain TCP: the ClientHello is never answered
        port = int((await upstream.start()).rsplit(":", 1)[1].split("/")[0])
        pool = Pool(Target("localhost", port, client_tls(certs), None), 2, 0.3)
        try:
            with pytest.raises(ConnectTimeout):
                await _call(pool)
        finally:
            pool.close()
            upstream.stop()
    loop_run(main())


# -- an https:// proxy ---------------------------------------------------------------------------------
@RUNNERS
@pytest.mark.parametrize("upstream_tls", [False, True], ids=["http-upstream", "https-upstream"])
def test_an_https_proxy_gets_tls_itself(certs: Path, upstream_tls: bool, loop_run: Any) -> None:
    """TLS to the proxy; plain HTTP goes in absolute form inside it, https in a CONNECT tunnel (TLS in TLS)."""
    async def main() -> tuple[list[bytes], list[bool], int]:
        proxy = ConnectProxy(tls=server_tls(certs))
        upstream = RawUpstream(reply(ANSWER), reply(ANSWER), tls=server_tls(certs) if upstream_tls else None)
        pport = await proxy.start()
        port = int((await upstream.start()).rsplit(":", 1)[1].split("/")[0])
        via = Proxy("", "localhost", pport, client_tls(certs), b"proxy-authorization: Basic dTpw\r\n")
        pool = Pool(Target("localhost", port, client_tls(certs) if upstream_tls else None, via), 2, 5.0)
        try:
            calls = [await _call(pool) for _ in range(2)]
        finally:
            pool.close()
            upstream.stop()
            proxy.stop()
        assert [body for body, _ in calls] == [ANSWER, ANSWER]
        return proxy.heads, [reused for _, reused in calls], upstream.connections
    heads, reused, connections = loop_run(main())
    assert reused == [False, True] and connections == 1  # kept alive through the proxy
    first = b"CONNECT localhost:" if upstream_tls else b"POST http://localhost:"
    assert heads[0].startswith(first) and b"proxy-authorization: Basic dTpw" in heads[0]


@RUNNERS
@pytest.mark.parametrize("answer", ["never", "407"])
def test_a_proxy_that_never_opens_the_tunnel_fails_the_connect(certs: Path, answer: str, loop_run: Any) -> None:
    """No answer to CONNECT within connect_s is a connect timeout; a refusal (407) says so."""
    async def main() -> BaseException:
        refusal = reply(b"", status="407 Proxy Authentication Required", headers="proxy-authenticate: Basic")
        proxy = RawUpstream(Hold(b"") if answer == "never" else refusal)
        pport = int((await proxy.start()).rsplit(":", 1)[1].split("/")[0])
        pool = Pool(Target("localhost", 443, client_tls(certs), Proxy("", "127.0.0.1", pport, None, b"")), 2, 0.3)
        try:
            with pytest.raises((ConnectTimeout, Unreachable)) as info:
                await _call(pool)
            return info.value
        finally:
            pool.close()
            proxy.stop()
    error = loop_run(main())
    if answer == "never":
        assert isinstance(error, ConnectTimeout)
    else:
        assert isinstance(error, Unreachable) and "407" in str(error)


# -- chunked trailers ----------------------------------------------------------------------------------
def _chunked(body: bytes, headers: str, trailers: str) -> bytes:
    framed = reply(body, "chunked", headers)
    assert framed.endswith(b"0\r\n\r\n")
    return framed[:-2] + trailers.encode() + b"\r\n\r\n"


@RUNNERS
@pytest.mark.parametrize("encoding,trailer", [("identity", "gzip"), ("gzip", "identity"), ("gzip", "deflate")])
def test_a_trailer_named_content_encoding_does_not_switch_decoding(encoding: str, trailer: str, loop_run: Any) -> None:
    body, headers = ANSWER, "content-type: application/json"
    if encoding == "gzip":
        body, headers = gzip.compress(ANSWER), headers + "\r\ncontent-encoding: gzip"
    upstream = RawUpstream(_chunked(body, headers, f"content-encoding: {trailer}\r\nx-checksum: 1"), reply(ANSWER))

    async def calls(backend: OpenAIHTTPBackend) -> list[bytes]:
        return [(await backend.complete(CHAT)).content for _ in range(2)]
    assert run(upstream, calls, loop_run) == [ANSWER, ANSWER] and upstream.connections == 1  # trailers read: kept alive


def test_a_stream_with_trailers_is_relayed_whole_and_its_connection_kept() -> None:
    stream = _chunked(gzip.compress(sse(4)), f"{SSE}\r\ncontent-encoding: gzip", "content-encoding: identity")
    upstream = RawUpstream(stream, reply(ANSWER))

    async def calls(backend: OpenAIHTTPBackend) -> tuple[int, bytes]:
        return len(await _frames(backend)), (await backend.complete(CHAT)).content
    assert run(upstream, calls) == (4, ANSWER) and upstream.connections == 1


# -- 204 and 304: no body ------------------------------------------------------------------------------
def _bodiless(status: str) -> bytes:
    head = "content-type: application/json" + ("\r\ncontent-length: 120" if status.startswith("304") else "")
    return f"HTTP/1.1 {status}\r\n{head}\r\n\r\n".encode()  # a 304 may carry the length it would have had


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_a_bodiless_status_is_an_error_and_the_connection_still_serves(status: str) -> None:
    """No body follows a 204 or a 304 whatever the headers say: the call fails as an upstream error (no
    wait for 120 bytes), and the next response on the kept-alive connection is read from its start."""
    upstream = RawUpstream(_bodiless(status), reply(ANSWER))

    async def calls(backend: OpenAIHTTPBackend) -> tuple[UpstreamError, bytes]:
        return await _error(backend.complete(CHAT)), (await backend.complete(CHAT)).content
    error, after = run(upstream, calls, timeouts=Timeouts(first_byte_s=3, between_chunks_s=3))
    assert error.kind == "protocol" and after == ANSWER and upstream.connections == 1, error.message


def test_a_304_on_a_stream_is_an_error_and_the_connection_still_serves() -> None:
    upstream = RawUpstream(_bodiless("304 Not Modified"), reply(sse(2), "chunked", SSE))

    async def calls(backend: OpenAIHTTPBackend) -> tuple[UpstreamError, int]:
        return await _error(_frames(backend)), len(await _frames(backend))
    error, frames = run(upstream, calls, timeouts=Timeouts(first_byte_s=3, between_chunks_s=3))
    assert error.kind == "protocol" and "304" in error.message and frames == 2 and upstream.connections == 1


@pytest.mark.parametrize("answer", [_bodiless("204 No Content"), reply(b"", "length", SSE), reply(b"", "chunked", SSE)])
def test_a_stream_that_ends_before_its_first_event_is_no_answer(answer: bytes) -> None:
    """A 204, or a 200 whose event stream is empty, is an upstream error before the first byte (the router may
    try another target), as the non-streamed call's empty answer is; not an empty success."""
    upstream = RawUpstream(answer)
    error = run(upstream, lambda b: _error(_frames(b)), timeouts=Timeouts(first_byte_s=3, between_chunks_s=3))
    assert error.kind == "protocol" and not error.after_first_byte and "without an answer" in error.message
    assert error.message.startswith("upstream ") and answer[9:12].decode() in error.message


# -- a half-closed socket ------------------------------------------------------------------------------
@RUNNERS
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_an_upstream_that_shuts_its_write_side_after_the_body_is_never_sent_another_request(
        framing: str, loop_run: Any) -> None:
    upstream = RawUpstream(HalfClose(reply(ANSWER, framing)), reply(ANSWER))

    async def calls(backend: OpenAIHTTPBackend) -> list[bytes]:
        first = (await backend.complete(CHAT)).content
        await asyncio.sleep(0.1)  # the FIN is in
        return [first, (await backend.complete(CHAT)).content]
    assert run(upstream, calls, loop_run) == [ANSWER, ANSWER]
    assert upstream.connections == 2 and len(upstream.heads) == 2  # none went out on the half-closed one


@RUNNERS
def test_a_stream_ended_by_a_half_close_is_complete(loop_run: Any) -> None:
    upstream = RawUpstream(HalfClose(reply(sse(3, done=False), "close", SSE)), reply(ANSWER))

    async def calls(backend: OpenAIHTTPBackend) -> tuple[int, bytes]:
        return len(await _frames(backend)), (await backend.complete(CHAT)).content
    assert run(upstream, calls, loop_run) == (3, ANSWER) and upstream.connections == 2
