"""The soak's client (observability/bench/exchange.py) against a scripted upstream: a response read to its
end keeps its connection for the next request, a cut one does not, an idle one past its expiry is never
used again, and a kept-alive connection the server closed as it was reused sends the request again once."""

from __future__ import annotations

import asyncio
from typing import Any

from observability.bench.client import Target
from observability.bench.exchange import BenchPool
from tests.support.raw_upstream import ANSWER, Close, RawUpstream, reply, sse


def _run(upstream: RawUpstream, use: Any, idle_expiry_s: float = 2.0) -> Any:
    async def main() -> Any:
        pool = BenchPool(Target.parse(await upstream.start(), "chat"), idle_expiry_s=idle_expiry_s)
        try:
            return await use(pool)
        finally:
            pool.close()
            await asyncio.sleep(0.05)  # the server sees the hang-ups
            upstream.stop()
    return asyncio.run(main())


async def _whole(pool: BenchPool, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    exchange = await pool.send(b"{}", headers or {})
    try:
        return await exchange.head(), await exchange.read()
    finally:
        exchange.close()


def test_requests_one_after_another_share_a_connection_and_say_what_they_were_given() -> None:
    upstream = RawUpstream(reply(ANSWER), reply(sse(3), "chunked", "content-type: text/event-stream"))

    async def two(pool: BenchPool) -> list[tuple[int, bytes]]:
        return [await _whole(pool, {"X-Request-Id": "soak-1"}), await _whole(pool)]
    assert _run(upstream, two) == [(200, ANSWER), (200, sse(3))]
    assert upstream.connections == 1
    head = upstream.heads[0].decode().lower()
    assert head.startswith("post /v1/chat/completions http/1.1\r\n") and "\r\nx-request-id: soak-1\r\n" in head
    assert "\r\ncontent-length: 2\r\n" in head


def test_a_response_cut_before_its_end_closes_its_connection() -> None:
    upstream = RawUpstream(reply(sse(50), "chunked", "content-type: text/event-stream"), reply(ANSWER))

    async def cut_then_whole(pool: BenchPool) -> tuple[int, bytes]:
        exchange = await pool.send(b"{}", {})
        await exchange.head()
        async for _ in exchange.body():
            break  # the client goes away mid-stream
        exchange.close()
        return await _whole(pool)
    assert _run(upstream, cut_then_whole) == (200, ANSWER)
    assert upstream.connections == 2 and upstream.hung_up >= 1


def test_an_idle_connection_past_its_expiry_is_closed_not_reused() -> None:
    upstream = RawUpstream(reply(ANSWER), reply(ANSWER))

    async def apart(pool: BenchPool) -> list[tuple[int, bytes]]:
        first = await _whole(pool)
        await asyncio.sleep(0.3)
        return [first, await _whole(pool)]
    assert _run(upstream, apart, idle_expiry_s=0.1) == [(200, ANSWER)] * 2
    assert upstream.connections == 2


def test_a_kept_alive_connection_closed_as_it_was_reused_sends_the_request_again_once() -> None:
    upstream = RawUpstream(reply(ANSWER), Close(), reply(ANSWER))

    async def two(pool: BenchPool) -> list[tuple[int, bytes]]:
        return [await _whole(pool), await _whole(pool)]
    assert _run(upstream, two) == [(200, ANSWER)] * 2
    assert upstream.connections == 2 and len(upstream.heads) == 3
