"""The bench client on a non-streamed completion: an error by default, one content chunk at the last
byte with `whole_body` (how bench/gateway_overhead.py times non-streamed calls)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from observability.bench.client import Client, Sent, Target
from observability.bench.metrics import e2e, ttft
from observability.bench.records import RequestRecord
from tests.support import procs

BODY_DELAY_S = 0.3


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    with procs.running(procs.python_module("tests.fakes.openai_upstream", "--port", str(port)),
                       f"{url}/health", name="fake-upstream"):
        yield url


def _send(url: str, whole_body: bool) -> RequestRecord:
    # Headers go out at once and the body BODY_DELAY_S later: TTFT must wait for the body.
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False,
            "user": f"fake:body_delay_ms={BODY_DELAY_S * 1000:g}"}
    client = Client(Target.parse(f"{url}/v1", "chat"), {}, idle_timeout_s=30, whole_body=whole_body)
    sent = Sent(json.dumps(body).encode(), "none", RequestRecord(0, "p", "t", 0, 0, 0.0, 0.0))

    async def once() -> RequestRecord:
        try:
            return await client.send(sent, 0.0)
        finally:
            client.close()  # inside the loop: its sockets belong to it

    return asyncio.run(once())


def test_a_whole_body_is_one_content_chunk_at_its_last_byte(upstream: str) -> None:
    record = _send(upstream, whole_body=True)
    assert record.ok, record.error_detail
    assert len(record.chunk_s) == 1
    first = ttft(record)
    assert first is not None and first >= BODY_DELAY_S  # not the headers' arrival
    assert first <= e2e(record)
    assert record.completion_tokens is not None and record.completion_tokens > 0


def test_without_whole_body_a_non_streamed_reply_is_an_error(upstream: str) -> None:
    record = _send(upstream, whole_body=False)
    assert record.error == "not_streamed"
    assert record.chunk_s == ()
