"""DisconnectGuard against a receive that behaves as uvicorn's (it waits on an event; http.disconnect once the
client is gone or the response is complete): a disconnect cancels the request's task and only that is absorbed,
close() stops the watcher, and a closed guard's cancelled watcher is freed by reference counting, not left as
a reference cycle for the cyclic GC (per request, it held uvicorn's request cycle and scope)."""
from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from gateway.disconnect import DisconnectGuard


class Cycle:
    """Stands in for uvicorn's RequestResponseCycle: `receive` waits until the client goes away or the
    response is complete, then answers http.disconnect."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.over = False

    async def receive(self) -> dict[str, Any]:
        if not self.over:
            await self.event.wait()
        return {"type": "http.disconnect"}

    def end(self) -> None:  # the client hung up, or the response's last byte went out
        self.over = True
        self.event.set()


def test_a_disconnect_cancels_the_request_and_is_absorbed() -> None:
    async def main() -> tuple[bool, bool]:
        cycle = Cycle()
        guard = DisconnectGuard(cycle.receive)
        await asyncio.sleep(0)  # the watcher now waits in receive
        cycle.end()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            absorbed = guard.absorb()
            guard.close()
            return guard.disconnected, absorbed
        return guard.disconnected, False

    assert asyncio.run(main()) == (True, True)


def test_after_close_the_end_of_the_response_cancels_nothing() -> None:
    async def main() -> tuple[bool, bool]:
        cycle = Cycle()
        guard = DisconnectGuard(cycle.receive)
        await asyncio.sleep(0)
        guard.close()
        cycle.end()  # uvicorn answers http.disconnect once the response is complete
        await asyncio.sleep(0.01)  # not cancelled: the sleep ends
        return guard.disconnected, guard.absorb()

    assert asyncio.run(main()) == (False, False)


def test_close_stops_the_watcher() -> None:
    async def main() -> bool:
        cycle = Cycle()
        guard = DisconnectGuard(cycle.receive)
        await asyncio.sleep(0)
        waiting = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        guard.close()
        await asyncio.sleep(0)
        return len(waiting) == 1 and waiting[0].cancelled()

    assert asyncio.run(main())


def test_a_closed_guard_leaves_no_reference_cycle() -> None:
    """With the cyclic GC off, what the cancelled watcher's traceback held (the receive's owner, as uvicorn's
    request cycle) is freed as soon as the watcher ends. Fails when the guard keeps its watcher: guard →
    watcher → CancelledError → traceback → `_watch`'s frame → guard."""
    async def main() -> weakref.ref[Cycle]:
        cycle = Cycle()
        gone = weakref.ref(cycle)
        guard = DisconnectGuard(cycle.receive)
        await asyncio.sleep(0)
        guard.close()
        del cycle, guard
        for _ in range(3):  # the cancel is delivered, the watcher ends
            await asyncio.sleep(0)
        return gone

    gc.collect()
    gc.disable()
    try:
        gone = asyncio.run(main())
        assert gone() is None
    finally:
        gc.enable()
