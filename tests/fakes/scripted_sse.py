"""A scripted OpenAI-compatible streaming server with known timings, for `hybridgw bench`'s tests
and its client-ceiling benchmark: raw asyncio HTTP/1.1 (keep-alive, chunked SSE), cheap per chunk.

Run: `python -m tests.fakes.scripted_sse --port P`. Behaviour per request from the model name's
suffix, e.g. `m;ttft_ms=300;itl_ms=50;chunks=8`. Keys: ttft_ms (role chunk at once, first content
after this), itl_ms (between content chunks), chunks (default max_tokens, else 8), status (an
OpenAI-shaped error reply), malformed (a non-JSON event after the first content chunk),
stall_after (stop sending, connection open, after k content chunks), drop_after (close the
connection after k), backends (a,b: the x-hybridgw-backend header, in turn per request), keys
(k1,k2: 401 unless the bearer key is one of them), no_usage, not_streamed (one JSON reply),
hang_up (close the connection after the response, without saying so, as servers do with idle
keep-alive connections). Usage: prompt tokens = words sent. GET /_stats: requests received so far.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from typing import Any

_counter = itertools.count()  # per process: which backend header the next request gets
_received = [0]


def _options(model: str) -> tuple[str, dict[str, str]]:
    name, *pairs = model.split(";")
    return name, {k: v for k, _, v in (p.partition("=") for p in pairs)}


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(obj: dict[str, Any]) -> bytes:
    return _chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


def _prompt_words(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"] if isinstance(m, dict))
    return len(str(body.get("prompt", "")).split())


async def _reply_json(writer: asyncio.StreamWriter, status: int, obj: Any) -> None:
    data = json.dumps(obj).encode()
    writer.write(
        b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (status, len(data), data)
    )
    await writer.drain()


async def _stream(writer: asyncio.StreamWriter, body: dict[str, Any], key: str) -> bool:
    """Write one scripted stream; False when the connection must close afterwards."""
    name, opts = _options(str(body.get("model", "m")))
    _received[0] += 1
    if "keys" in opts and key not in opts["keys"].split(","):
        opts["status"] = "401"
    if "status" in opts:
        status = int(opts["status"])
        await _reply_json(
            writer,
            status,
            {
                "error": {
                    "message": f"scripted {status}",
                    "type": "scripted",
                    "param": None,
                    "code": str(status),
                }
            },
        )
        return True
    if "not_streamed" in opts:  # a server that ignores stream=true
        await _reply_json(
            writer,
            200,
            {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            },
        )
        return True
    chat = "messages" in body
    chunks, itl = int(opts.get("chunks", body.get("max_tokens") or 8)), float(opts.get("itl_ms", 0)) / 1000
    backends = opts.get("backends", "").split(",")
    backend = backends[next(_counter) % len(backends)] if opts.get("backends") else ""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        + (b"x-hybridgw-backend: %s\r\n" % backend.encode() if backend else b"")
        + b"\r\n"
    )
    # OpenAI's chunk fields (other clients, AIPerf among them, read `object`)
    head = {
        "id": "scripted",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": 0,
        "model": name,
    }
    if chat:  # the role-only first chunk, which TTFT must not count
        writer.write(
            _event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        )
    await writer.drain()
    await asyncio.sleep(float(opts.get("ttft_ms", 0)) / 1000)
    for i in range(chunks):
        if i and itl:
            await asyncio.sleep(itl)
        if str(i) == opts.get("stall_after"):
            await asyncio.sleep(3600)
        if str(i) == opts.get("drop_after"):
            return False
        choice = {"index": 0, "delta": {"content": f" t{i}"}} if chat else {"index": 0, "text": f" t{i}"}
        writer.write(_event({**head, "choices": [choice]}))
        if i == 0 and "malformed" in opts:
            writer.write(_chunk(b"data: {this is not json\n\n"))
        await writer.drain()
    if "no_usage" not in opts:
        writer.write(
            _event(
                {
                    **head,
                    "choices": [],
                    "usage": {"prompt_tokens": _prompt_words(body), "completion_tokens": chunks},
                }
            )
        )
    writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    await writer.drain()
    return "hang_up" not in opts


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path = head.split(b" ", 2)[:2]
            length, key = 0, ""
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                elif line.lower().startswith(b"authorization: bearer "):
                    key = line[22:].decode().strip()
            body = json.loads(await reader.readexactly(length)) if length else {}
            if method == b"GET" and path.endswith(b"/models"):
                await _reply_json(writer, 200, {"object": "list", "data": [{"id": "scripted"}]})
            elif method == b"GET":
                await _reply_json(writer, 200, {"requests": _received[0]})
            elif not await _stream(writer, body, key):
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    asyncio.run(_main(p.parse_args().port))


if __name__ == "__main__":
    main()
