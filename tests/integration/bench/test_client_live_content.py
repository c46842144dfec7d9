"""The bench client's `on_content` hook: every content chunk's time as it arrives, the same times the
record keeps, and still there when the stream is cancelled mid-way (bench/engine_stall.py's use)."""

from __future__ import annotations

import asyncio
import json

from observability.bench.client import Client, Sent, Target
from observability.bench.records import RequestRecord
from tests.integration.bench.conftest import Scripted


def _sent(model: str) -> Sent:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}
    return Sent(json.dumps(body).encode(), None, RequestRecord(0, "p", "t", 0, 8, 0.0, 0.0))


def test_the_hook_sees_each_content_chunk_the_record_keeps(scripted: Scripted) -> None:
    seen: list[float] = []

    async def once() -> RequestRecord:
        client = Client(Target.parse(scripted.url, "chat"), {}, idle_timeout_s=30)
        try:
            return await client.send(_sent("m;ttft_ms=5;itl_ms=2;chunks=6"), 0.0, seen.append)
        finally:
            client.close()

    record = asyncio.run(once())
    assert record.ok, record.error_detail
    assert len(record.chunk_s) == 6 and seen == list(record.chunk_s)  # role-only chunk left out


def test_a_cancelled_stream_keeps_what_the_hook_saw(scripted: Scripted) -> None:
    seen: list[float] = []

    async def cancelled() -> bool:
        client = Client(Target.parse(scripted.url, "chat"), {}, idle_timeout_s=30)
        task = asyncio.create_task(client.send(_sent("m;ttft_ms=5;itl_ms=20;chunks=5000"), 0.0, seen.append))
        for _ in range(3000):  # a bound on waiting, not a speed assertion
            if len(seen) >= 3 or task.done():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        finally:
            client.close()
        return False

    assert asyncio.run(cancelled())
    assert len(seen) >= 3 and seen == sorted(seen)
