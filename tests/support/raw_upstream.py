"""A scripted HTTP/1.1 upstream on 127.0.0.1 for the upstream client's tests: each request gets the next
reply as raw bytes (any framing, encoding or breakage), and the server counts connections and requests;
beside it a forwarding proxy (CONNECT and absolute-form, plain or TLS) and a test CA made with openssl."""
from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
import ssl
import struct
import subprocess
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ANSWER = json.dumps({"id": "c", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}).encode()


def sse(count: int, done: bool = True) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "t"}}]}
    return b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for _ in range(count)) + \
        (b"data: [DONE]\n\n" if done else b"")


def reply(body: bytes, framing: str = "length", headers: str = "content-type: application/json",
          status: str = "200 OK") -> bytes:
    """A response: `length` (Content-Length), `chunked` (in pieces of 40 bytes) or `close` (to the close)."""
    head = f"HTTP/1.1 {status}\r\n{headers}\r\n".encode()
    if framing == "length":
        return head + b"content-length: %d\r\n\r\n%s" % (len(body), body)
    if framing == "chunked":
        pieces = [body[i:i + 40] for i in range(0, len(body), 40)]
        return head + b"transfer-encoding: chunked\r\n\r\n" + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) \
            + b"0\r\n\r\n"
    return head + b"connection: close\r\n\r\n" + body


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body)


@dataclass(frozen=True)
class Close:
    """Close the connection without answering (a keep-alive connection the server closed as we sent);
    `partial`: some bytes first; `reset`: with a TCP reset, once the client has had them (a crash, not an end)."""

    partial: bytes = b""
    reset: bool = False


@dataclass(frozen=True)
class Hold:
    """Write these bytes, then nothing more (a stalled upstream) until the client hangs up."""

    partial: bytes


@dataclass(frozen=True)
class HalfClose:
    """Write this reply, then shut the write side (a FIN) and keep reading: whatever the client sends on the
    connection after is counted in `heads`, never answered."""

    reply: bytes


class RawUpstream:
    def __init__(self, *replies: bytes | Close | Hold | HalfClose, tls: ssl.SSLContext | None = None) -> None:
        self.replies = deque(replies)
        self.tls = tls
        self.connections = 0  # accepted
        self.hung_up = 0  # connections the client closed
        self.heads: list[bytes] = []  # each request's head, as received
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return f"http{'s' if self.tls else ''}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.hung_up += 1
                    return
                length = re.search(rb"content-length: (\d+)", head, re.I)
                await reader.readexactly(int(length.group(1)) if length else 0)
                self.heads.append(head)
                answer = self.replies.popleft()
                if isinstance(answer, Close):
                    writer.write(answer.partial)
                    if answer.reset:
                        await writer.drain()
                        await asyncio.sleep(0.3)  # the client reads what came before the reset
                        writer.get_extra_info("socket").setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if isinstance(answer, HalfClose):
                    writer.write(answer.reply)
                    writer.write_eof()
                    await self._count_heads(reader)
                    return
                writer.write(answer.partial if isinstance(answer, Hold) else answer)
                await writer.drain()
                if isinstance(answer, Hold):
                    await reader.read()
                    self.hung_up += 1
                    return
                if b"connection: close" in answer.split(b"\r\n\r\n", 1)[0]:
                    return
        finally:
            writer.close()

    async def _count_heads(self, reader: asyncio.StreamReader) -> None:
        buffered = b""
        while data := await reader.read(65536):
            buffered += data
            while b"\r\n\r\n" in buffered:
                head, buffered = buffered.split(b"\r\n\r\n", 1)
                self.heads.append(head + b"\r\n\r\n")
        self.hung_up += 1


@contextmanager
def full_backlog() -> Iterator[int]:
    """The port of a listener that never accepts and whose accept queue is full: Linux drops the next
    SYN, so a connect to it neither completes nor fails (a connect timeout, offline)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # a backlog of 0 queues one; the others wait in SYN retries
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for s in (*fillers, listener):
            s.close()


def make_certs(d: Path) -> Path:
    """In `d`: a test CA (ca.pem), and a certificate it signed for `localhost` only (srv.pem, srv.key)."""
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca"],
                ["req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost"],
                ["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "srv.pem", "-days", "1", "-extfile", "san.cnf"]):
        subprocess.run(["openssl", *cmd], cwd=d, check=True, capture_output=True)
    return d


def server_tls(certs: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "srv.pem", certs / "srv.key")
    return context


def client_tls(certs: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs / "ca.pem"))


class ConnectProxy:
    """A forwarding proxy: CONNECT tunnels and absolute-form requests, each head kept as received; `tls`:
    the proxy itself speaks TLS (an https:// proxy)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        if head.startswith(b"CONNECT "):
            host, port = head.split(b" ")[1].decode().rsplit(":", 1)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # POST http://host:port/... HTTP/1.1
            host, port = re.match(rb"POST http://([^:/]+):(\d+)/", head).groups()  # type: ignore[union-attr]
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        if not head.startswith(b"CONNECT "):
            up_writer.write(head)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()
