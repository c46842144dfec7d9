"""Where the upstream client's connections go and how many: max_connections per backend, idle ones closed
at the keep-alive expiry, HTTP_PROXY (absolute-form, the proxy URL's credentials), HTTPS through a proxy's
CONNECT tunnel, and TLS checked (the CA and the hostname). Real sockets on 127.0.0.1, certificates made
by the openssl CLI."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import uvloop

from gateway.backends.base import UpstreamRequest
from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.backends.upstream_pool import Pool, Proxy, Target, Unreachable, request_head
from gateway.catalog import ResolvedBackend
from gateway.errors import UpstreamError
from tests.support.raw_upstream import (
    ANSWER,
    ConnectProxy,
    RawUpstream,
    client_tls,
    make_certs,
    reply,
    server_tls,
)

CHAT = UpstreamRequest("chat/completions", {"model": "m"}, "req_1")
RUNNERS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])  # the gateway's loop


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA, and a certificate it signed for `localhost` (only)."""
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_max_connections_caps_the_connections_a_backend_opens() -> None:
    async def main(limit: int) -> int:
        upstream = RawUpstream(*[reply(ANSWER)] * 6)
        base_url = await upstream.start()
        backend = OpenAIHTTPBackend(ResolvedBackend("up", "openai", base_url, None, None, max_connections=limit))
        await backend.open()
        await asyncio.gather(*(backend.complete(CHAT) for _ in range(6)))
        await backend.aclose()
        upstream.stop()
        return upstream.connections
    assert asyncio.run(main(1)) == 1
    assert asyncio.run(main(2)) == 2


async def _call(pool: Pool, path: str = "/v1/chat/completions") -> tuple[bytes, bool]:
    conn, reused = await pool.acquire()
    conn.send(request_head(pool.target, path, {}) + b"content-length: 2\r\n\r\n{}", False)
    conn.arm(asyncio.get_running_loop().time() + 5)
    await conn.head()
    body = await conn.read_all()
    pool.release(conn)
    return body, reused


def test_an_idle_connection_is_closed_at_the_keep_alive_expiry_and_never_handed_out_after() -> None:
    async def main() -> tuple[list[bool], int]:
        upstream = RawUpstream(reply(ANSWER), reply(ANSWER), reply(ANSWER))
        await upstream.start()
        port = upstream.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        pool = Pool(Target("127.0.0.1", port, None, None), 4, 5.0, keepalive_s=0.2)
        reused = [(await _call(pool))[1], (await _call(pool))[1]]
        await asyncio.sleep(0.6)  # past the expiry: the pool's sweep closed it
        hung_up = upstream.hung_up
        reused.append((await _call(pool))[1])
        pool.close()
        upstream.stop()
        return reused, hung_up
    assert asyncio.run(main()) == ([False, True, False], 1)


def test_plain_http_goes_through_http_proxy_in_absolute_form_with_its_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> tuple[ConnectProxy, RawUpstream]:
        proxy, upstream = ConnectProxy(), RawUpstream(reply(ANSWER))
        monkeypatch.setenv("HTTP_PROXY", f"http://user:secret@127.0.0.1:{await proxy.start()}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        backend = OpenAIHTTPBackend(ResolvedBackend("up", "openai", await upstream.start(), None, None))
        await backend.open()
        assert (await backend.complete(CHAT)).content == ANSWER
        await backend.aclose()
        return proxy, upstream
    proxy, upstream = asyncio.run(main())
    assert proxy.heads[0].startswith(b"POST http://127.0.0.1:")
    assert b"\r\nproxy-authorization: Basic dXNlcjpzZWNyZXQ=\r\n" in proxy.heads[0]  # user:secret
    assert upstream.heads == proxy.heads


@RUNNERS
def test_https_goes_through_the_proxys_connect_tunnel_then_tls_to_the_host(certs: Path, run: Any) -> None:
    async def main() -> tuple[bytes, ConnectProxy]:
        proxy, upstream = ConnectProxy(), RawUpstream(reply(ANSWER), tls=server_tls(certs))
        pport = await proxy.start()
        port = int((await upstream.start()).rsplit(":", 1)[1].split("/")[0])
        auth = b"proxy-authorization: Basic dTpw\r\n"
        pool = Pool(Target("localhost", port, client_tls(certs), Proxy("", "127.0.0.1", pport, None, auth)), 2, 5.0)
        body, _ = await _call(pool)
        pool.close()
        upstream.stop()
        return body, proxy
    body, proxy = run(main())
    assert body == ANSWER
    assert proxy.heads[0].startswith(b"CONNECT localhost:") and b"proxy-authorization: Basic dTpw" in proxy.heads[0]


@RUNNERS
def test_tls_checks_the_hostname(certs: Path, run: Any) -> None:
    async def main(host: str) -> bytes:
        upstream = RawUpstream(reply(ANSWER), tls=server_tls(certs))
        port = int((await upstream.start()).rsplit(":", 1)[1].split("/")[0])
        pool = Pool(Target(host, port, client_tls(certs), None), 2, 5.0)
        try:
            return (await _call(pool))[0]
        finally:
            pool.close()
            upstream.stop()
    assert run(main("localhost")) == ANSWER
    with pytest.raises(Unreachable, match="match|mismatch"):  # the certificate names localhost only
        run(main("127.0.0.1"))


def test_an_https_backend_trusts_only_certifis_cas(certs: Path) -> None:
    async def main() -> UpstreamError:
        upstream = RawUpstream(reply(ANSWER), tls=server_tls(certs))
        backend = OpenAIHTTPBackend(ResolvedBackend("up", "openai", await upstream.start(), None, None))
        await backend.open()
        try:
            with pytest.raises(UpstreamError) as info:
                await backend.complete(CHAT)
            return info.value
        finally:
            await backend.aclose()
            upstream.stop()
    error = asyncio.run(main())
    assert error.kind == "connect" and "unreachable" in error.message and "CERTIFICATE_VERIFY_FAILED" in error.message
