"""The write deadline of a stream: a send that waits past the limit cancels the relay; time spent
outside sends (waiting for the upstream) never counts."""
from __future__ import annotations

import asyncio
from typing import Any

from gateway.write_watch import WriteWatch


def _send_never_returns() -> Any:
    async def send(message: Any) -> None:
        await asyncio.Event().wait()  # a client that reads nothing: the socket buffer stays full

    return send


def test_a_send_that_waits_past_the_limit_cancels_the_relay() -> None:
    async def relay() -> str:
        watch = WriteWatch(0.1)
        try:
            await watch.send(_send_never_returns(), {"type": "http.response.body"})
        except asyncio.CancelledError:
            return "stalled" if watch.absorb() else "cancelled by someone else"
        finally:
            watch.stop()
        return "sent"

    assert asyncio.run(relay()) == "stalled"


def test_waiting_for_the_upstream_is_no_stall() -> None:
    async def relay() -> bool:
        watch = WriteWatch(0.05)
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        for _ in range(8):
            await asyncio.sleep(0.05)  # the upstream is slow; the client reads every chunk at once
            await watch.send(send, {"type": "http.response.body"})
        watch.stop()
        return watch.stalled or len(sent) != 8

    assert asyncio.run(relay()) is False


def test_a_cancel_that_is_not_the_watchs_is_left_alone() -> None:
    async def relay() -> bool:
        watch = WriteWatch(60)
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.01, task.cancel)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return watch.absorb()
        finally:
            watch.stop()
        return True

    assert asyncio.run(relay()) is False
