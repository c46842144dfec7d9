"""A no-delay OpenAI-compatible streaming server for measuring load generators, not servers: every
reply is the same pre-encoded chat stream (a role chunk, N content chunks, usage, [DONE]) and
--workers processes share the port (SO_REUSEPORT), so the client is what saturates first.

    python -m bench.sse_server --port P [--chunks 16] [--workers 2] [--split]

--split writes each SSE event with its own socket send (a yield between them) instead of the whole
stream in one write, so the client sees events in separate reads, as from a decoding model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket

_ROLE = {"role": "assistant", "content": ""}


def encode_stream(chunks: int) -> list[bytes]:
    """The reply's HTTP head and each chunked SSE event, encoded once at start-up."""
    head = {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": "m"}

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    def event(extra: dict[str, object]) -> bytes:
        return chunk(b"data: " + json.dumps({**head, **extra}, separators=(",", ":")).encode() + b"\n\n")

    parts = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + event({"choices": [{"index": 0, "delta": _ROLE}]})
    ]
    parts += [event({"choices": [{"index": 0, "delta": {"content": f" t{i}"}}]}) for i in range(chunks)]
    usage = {"prompt_tokens": 32, "completion_tokens": chunks, "total_tokens": 32 + chunks}
    parts.append(event({"choices": [], "usage": usage}) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return parts


def _json_reply(obj: object) -> bytes:
    data = json.dumps(obj).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(data),
        data,
    )


async def serve(parts: list[bytes], split: bool, port: int) -> None:
    whole = b"".join(parts)
    models = _json_reply({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)  # the request body is not read: every reply is the same
                if head.startswith(b"GET"):
                    writer.write(models)
                elif split:
                    for part in parts:
                        writer.write(part)
                        await asyncio.sleep(0)  # lets the loop flush this event before the next
                else:
                    writer.write(whole)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # the kernel spreads connections over workers
    sock.bind(("127.0.0.1", port))
    server = await asyncio.start_server(one, sock=sock, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--split", action="store_true")
    a = p.parse_args()
    parts = encode_stream(a.chunks)
    for _ in range(a.workers - 1):  # forked before any loop exists; same process group, so stopped together
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            break
    asyncio.run(serve(parts, a.split, a.port))


if __name__ == "__main__":
    main()
