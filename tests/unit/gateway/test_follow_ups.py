"""Follow-up work (limit settlement) queued in one turn of the loop runs in one task, in order; a failing one
is logged and the rest still run; one that waits does not stop the next turn's from starting; drain waits
for all. Real asyncio, no sockets."""
from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.follow_ups import FollowUps


def test_one_turns_work_runs_in_one_task_in_order(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[tuple[int, asyncio.Task[object] | None]] = []

    async def settle(i: int) -> None:
        ran.append((i, asyncio.current_task()))
        if i == 1:
            raise RuntimeError("store down")

    async def main() -> None:
        follow = FollowUps(logging.getLogger("test.follow_ups"))
        for i in range(4):
            follow.add(settle(i))
        await follow.drain()

    with caplog.at_level(logging.WARNING, "test.follow_ups"):
        asyncio.run(main())
    assert [i for i, _ in ran] == [0, 1, 2, 3]
    assert len({task for _, task in ran}) == 1  # one task for the four (a task each before)
    assert "store down" in caplog.text


def test_a_slow_one_does_not_hold_up_the_next_turns_and_drain_waits_for_both() -> None:
    done: list[str] = []

    async def main() -> None:
        follow = FollowUps(logging.getLogger("test.follow_ups"))
        release = asyncio.Event()

        async def slow() -> None:
            await release.wait()
            done.append("slow")

        async def quick() -> None:
            done.append("quick")

        follow.add(slow())
        await asyncio.sleep(0)  # the first task has taken its batch and waits
        follow.add(quick())
        for _ in range(5):
            await asyncio.sleep(0)
        assert done == ["quick"]
        release.set()
        await follow.drain()

    asyncio.run(main())
    assert done == ["quick", "slow"]
