"""A connection through an HTTP proxy whose https upstream cannot be reached through the tunnel is freed by
reference counting (asyncio and uvloop, cyclic GC off): not kept by the pool, not in a cycle, nor its failure.
The failures: TLS fails in the tunnel (no TLS server there, a certificate the client does not trust), the proxy
closes before answering CONNECT, cuts the tunnel in the handshake, refuses it (407); each error names what failed.
And a discarded connection is freed when no connection_lost reaches it (start_tls took its transport)."""
from __future__ import annotations

import asyncio
import gc
import ssl
from pathlib import Path
from typing import Any

import pytest
import uvloop

from gateway.backends.upstream_pool import Pool, Proxy, Target, Unreachable
from gateway.backends.upstream_wire import ConnectionLost, UpstreamConnection
from tests.support.raw_upstream import Close, ConnectProxy, RawUpstream, make_certs, reply, server_tls
from tests.support.tunnel_procs import not_tls

RUNNERS = pytest.mark.parametrize("loop_run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
CALLS = 3
FAILURES = (Unreachable, ConnectionLost, ssl.SSLError, ssl.SSLCertVerificationError)


class NotTls(RawUpstream):
    """Answers a TLS ClientHello with an HTTP line and closes (tests/support/tunnel_procs.py)."""

    async def start(self) -> str:
        self.server = await asyncio.start_server(not_tls, "127.0.0.1", 0)
        return f"https://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


def alive() -> tuple[int, int]:
    """The client's connections and failures alive (by type: isinstance on every gc object would ask lazy
    proxies; not the test servers' own errors, such as asyncio's server-side reset of a refused handshake)."""
    objects = gc.get_objects()
    return (sum(1 for o in objects if type(o) is UpstreamConnection),
            sum(1 for o in objects if type(o) in FAILURES))


async def _failures(upstream: RawUpstream, proxy: ConnectProxy | RawUpstream) -> list[str]:
    """CALLS acquires through the proxy to `upstream` over https (the client trusts the system's CAs only)."""
    port = int((await upstream.start()).rsplit(":", 1)[1].split("/")[0])
    pport = await proxy.start() if isinstance(proxy, ConnectProxy) else \
        int((await proxy.start()).rsplit(":", 1)[1].split("/")[0])
    pool = Pool(Target("localhost", port, ssl.create_default_context(), Proxy("", "127.0.0.1", pport, None, b"")),
                2, 5.0)
    said = []
    try:
        for _ in range(CALLS):
            try:
                await pool.acquire()
                said.append("connected")
            except Unreachable as exc:
                said.append(str(exc))
        assert not pool._open and not pool._idle and pool._opening == 0  # nothing kept, nothing counted
    finally:
        pool.close()
        upstream.stop()
        proxy.stop()
        await asyncio.sleep(0.05)  # the closes run
    return said


def left_without_cyclic_gc(loop_run: Any, upstream: RawUpstream, proxy: ConnectProxy | RawUpstream) -> tuple:
    gc.collect()
    gc.disable()
    try:
        before = alive()
        said = loop_run(_failures(upstream, proxy))
        after = alive()
    finally:
        gc.enable()
    return said, after[0] - before[0], after[1] - before[1]


@RUNNERS
def test_a_tls_handshake_that_fails_inside_the_tunnel_leaves_nothing(loop_run: Any) -> None:
    said, connections, errors = left_without_cyclic_gc(loop_run, NotTls(), ConnectProxy())
    assert (connections, errors) == (0, 0)
    assert len(said) == CALLS and all("TLS with localhost:" in s and "through the proxy" in s for s in said), said


@RUNNERS
def test_an_untrusted_certificate_inside_the_tunnel_leaves_nothing(certs: Path, loop_run: Any) -> None:
    untrusted = RawUpstream(*[reply(b"{}")] * CALLS, tls=server_tls(certs))  # a test CA, not in certifi
    said, connections, errors = left_without_cyclic_gc(loop_run, untrusted, ConnectProxy())
    assert (connections, errors) == (0, 0)
    assert all("TLS with localhost:" in s and "CERTIFICATE_VERIFY_FAILED" in s for s in said), said


@RUNNERS
@pytest.mark.parametrize("answer", ["closes", "cuts", "407"])
def test_a_proxy_that_closes_cuts_or_refuses_the_tunnel_leaves_nothing(answer: str, loop_run: Any) -> None:
    """"closes": before answering CONNECT; "cuts": answers 200, then closes the tunnel in the TLS handshake (it
    could not reach the upstream), of which uvloop tells the connection nothing: no connection_lost."""
    answers = {"closes": Close(), "cuts": Close(b"HTTP/1.1 200 Connection established\r\n\r\n"),
               "407": reply(b"", status="407 Proxy Authentication Required", headers="proxy-authenticate: Basic")}
    said, connections, errors = left_without_cyclic_gc(loop_run, RawUpstream(), RawUpstream(*[answers[answer]] * CALLS))
    assert (connections, errors) == (0, 0)
    expected = {"closes": "the proxy closed the connection", "cuts": "failed: the proxy closed the tunnel",
                "407": "407"}[answer]
    assert len(said) == CALLS and all(expected in s for s in said), said


@RUNNERS
def test_a_discarded_connection_is_freed_when_no_connection_lost_comes(loop_run: Any) -> None:
    """The pool's discard() frees a connection whose transport went to another protocol (as start_tls hands it to
    its TLS protocol), so that no connection_lost reaches it: on main its parser and transport held it in a cycle.
    The bench met this when the client hung up before a non-streamed answer, as well as in a cut tunnel."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        for _ in range(CALLS):
            conn = UpstreamConnection(loop)
            transport, _ = await loop.create_connection(lambda c=conn: c, "127.0.0.1", server.sockets[0].getsockname()[1])
            transport.set_protocol(asyncio.Protocol())  # connection_lost goes there now
            conn.discard()
            del conn, transport
            await asyncio.sleep(0.01)  # the close runs
        server.close()
        await server.wait_closed()

    gc.collect()
    gc.disable()
    try:
        before = alive()[0]
        loop_run(main())
        after = alive()[0]
    finally:
        gc.enable()
    assert after - before == 0
