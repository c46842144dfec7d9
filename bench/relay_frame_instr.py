"""The relay's own instructions per frame, counted by callgrind in one process: `SSERelayResponse._relay` fed
one-chunk batches (a paced stream: each frame its own upstream read) by an async generator, sending into a
coroutine that keeps nothing; no server, no socket, no upstream client. Deterministic where the gateway-wide
count (bench/hot_path_instr.py --kind paced) spreads ±4 k a frame: for A/B of the per-frame Python of ours.

Run: valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/rf.out \\
       .venv/bin/python -m bench.relay_frame_instr --callgrind [--frames 4000] [--usage-asked] [--wants-usage] [--split]
     callgrind_annotate /tmp/rf.out | head   (PROGRAM TOTALS / --frames = instructions per frame)
Without valgrind it times the same loop (noisy on a shared box).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

from gateway.backends.base import Chunks
from gateway.backends.stream_frames import sort_out
from gateway.dispatch import OpenedStream
from gateway.exchange import Exchange
from gateway.sse import FrameSplitter
from gateway.stream_tally import StreamTally
from gateway.streaming import SSERelayResponse
from gateway.write_watch import WriteWatch
from policies.decision import Target
from tests.fakes.openai_upstream import _chat_chunk


class _Observer:
    def started(self, target: Target) -> None: ...

    def failed(self, target: Target, error: object) -> None: ...

    def succeeded(self, target: Target) -> None: ...


class _Guard:
    def close(self) -> None: ...


def _payload(frame: bytes) -> bytes:
    return frame[6:-2]  # `data: ...\n\n` → the payload the backend yields


async def _batches(batches: list[Chunks]) -> AsyncIterator[Chunks]:
    for batch in batches:  # made beforehand: only the relay's work is counted
        yield batch


async def _split(reads: list[bytes]) -> AsyncIterator[Chunks]:
    """As the backend's generator does per read: the SSE splitter, then sort_out (gateway/backends/openai_http.py)."""
    splitter = FrameSplitter()
    for piece in reads:
        payloads, _ = sort_out(splitter.feed(piece))
        yield payloads


async def _sink(message: object) -> None:
    return None


def _toggle(on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True,
                   capture_output=True)


async def run(frames: int, with_usage: bool, wants_usage: bool, instrument: bool, split: bool = False) -> float:
    ex = Exchange.begin("chat", None)
    role = [_payload(_chat_chunk("m", 1, {"role": "assistant", "content": ""}, None, with_usage))]
    reads = [_chat_chunk("m", 1, {"content": f"tok{i} "}, None, with_usage) for i in range(frames)]
    reads.append(_chat_chunk("m", 1, {}, "stop", with_usage))
    rest = _split(reads) if split else _batches([[_payload(read)] for read in reads])
    ex.clock.mark_first_byte()
    response = SSERelayResponse.__new__(SSERelayResponse)
    response.ex, response.tally, response.cap = ex, StreamTally(wants_usage), None
    response.opened = OpenedStream(Target("b", "m"), role, rest, ())
    response.observer, response.guard = _Observer(), _Guard()  # type: ignore[assignment]
    response.watch = WriteWatch(60.0)
    await asyncio.sleep(0)
    if instrument:
        _toggle(True)
    started = time.perf_counter()
    await response._relay(_sink)
    elapsed = time.perf_counter() - started
    if instrument:
        _toggle(False)
    response.watch.stop()
    assert len(ex.clock.gaps) == frames - 1, len(ex.clock.gaps)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--usage-asked", action="store_true", help="chunks carry `\"usage\":null` (the gateway "
                        "asks the upstream for usage: every real stream)")
    parser.add_argument("--wants-usage", action="store_true", help="the client asked for usage too")
    parser.add_argument("--callgrind", action="store_true", help="under callgrind: count only the relay loop")
    parser.add_argument("--split", action="store_true", help="the upstream reads through the backend's SSE splitter "
                        "and sort_out, as bytes (else the payloads are handed over ready)")
    args = parser.parse_args()
    asyncio.run(run(200, args.usage_asked, args.wants_usage, instrument=False, split=args.split))  # warm
    elapsed = asyncio.run(run(args.frames, args.usage_asked, args.wants_usage, instrument=args.callgrind,
                              split=args.split))
    print(f"{args.frames} frames: {elapsed / args.frames * 1e6:.2f} µs a frame (wall, this process)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
