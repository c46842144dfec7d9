"""A scripted HTTP/1.1 upstream on 127.0.0.1 for the upstream client's tests: each request gets the next
reply as raw bytes (any framing, encoding or breakage), and the server counts connections and requests."""
from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
import ssl
import struct
from collections import deque
from dataclasses import dataclass

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


class RawUpstream:
    def __init__(self, *replies: bytes | Close | Hold, tls: ssl.SSLContext | None = None) -> None:
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
