"""Instructions per body read of one UpstreamConnection (gateway/backends/upstream_wire.py), counted by
callgrind in one process: a chunked response fed to `data_received` one SSE event at a time from the loop,
read by `read_any` in a coroutine; no socket (the transport writes nowhere).

Run: valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/wr.out \\
       .venv/bin/python -m bench.wire_read_instr --callgrind [--frames 2000]
     callgrind_annotate /tmp/wr.out | grep TOTALS   (÷ --frames = instructions a read)
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from bench.relay_frame_instr import _toggle
from gateway.backends.upstream_wire import UpstreamConnection
from tests.fakes.openai_upstream import _chat_chunk


class _Transport:
    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


async def run(frames: int, instrument: bool) -> None:
    loop = asyncio.get_running_loop()
    conn = UpstreamConnection(loop)
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    conn.send(b"GET / HTTP/1.1\r\n\r\n", True)
    conn.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n")
    await conn.head()
    events = [_chat_chunk("m", 1, {"content": f"tok{i} "}, None, True) for i in range(frames)]
    pieces = [b"%x\r\n%s\r\n" % (len(e), e) for e in events] + [b"0\r\n\r\n"]

    def feed(i: int) -> None:
        conn.data_received(pieces[i])
        if i + 1 < len(pieces):
            loop.call_soon(feed, i + 1)

    if instrument:
        _toggle(True)
    loop.call_soon(feed, 0)
    got = 0
    while await conn.read_any():
        got += 1
    if instrument:
        _toggle(False)
    assert got == frames, got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--callgrind", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(200, False))
    asyncio.run(run(args.frames, args.callgrind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
