"""Servers for the proxy tests, each its own process on 127.0.0.1 (`python -m tests.support.tunnel_procs KIND PORT
[CERTS]`): a forwarding proxy (raw_upstream.ConnectProxy), a TCP server that answers TLS with plain HTTP, and a TLS
server with a certificate of raw_upstream's test CA (trusted by no one else); the TLS ones print "accepted"."""
from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

from tests.support import procs
from tests.support.raw_upstream import ConnectProxy, server_tls

ROOT = Path(__file__).resolve().parents[2]
NOT_TLS = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


async def not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.read(4096)  # the ClientHello
        writer.write(NOT_TLS)
        await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def _serve(kind: str, port: int, certs: str | None) -> None:
    if kind == "proxy":
        proxy = ConnectProxy()
        server = proxy.server = await asyncio.start_server(proxy._serve, "127.0.0.1", port)
    else:
        tls = server_tls(Path(certs)) if kind == "untrusted-tls" and certs else None

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            print("accepted", flush=True)
            if tls is None:
                return await not_tls(reader, writer)
            try:
                await writer.start_tls(tls)  # the client refuses the certificate
            except (OSError, asyncio.IncompleteReadError):
                pass
            writer.close()
        server = await asyncio.start_server(counted, "127.0.0.1", port)
    async with server:
        await asyncio.Event().wait()


def start(kind: str, certs: Path | None = None, name: str | None = None) -> tuple[procs.Proc, int]:
    """One of them as a process on a free port, listening when this returns."""
    port = procs.free_port()
    args = [kind, str(port), *([str(certs)] if certs else [])]
    proc = procs.start(procs.python_module("tests.support.tunnel_procs", *args),
                       env={"PYTHONPATH": str(ROOT)}, cwd=ROOT, name=name or kind)
    procs.wait_until(lambda: _listening(port) or not proc.alive(), f"{kind} listening on {port}", wait_s=30)
    if not proc.alive():
        raise RuntimeError(f"{kind} did not start: {proc.output()}")
    return proc, port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
