"""The event loop's default executor lets its idle workers go (gateway/idle_executor.py): a burst of blocked
calls starts workers up to the maximum, and once idle they exit; later calls still run. The stdlib's
ThreadPoolExecutor (what asyncio uses by default) keeps every worker it started until shutdown."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.idle_executor import IdleExitExecutor


def _burst(executor: ThreadPoolExecutor, n: int) -> None:
    """n calls that block until all n run at once: n workers."""
    barrier = threading.Barrier(n + 1)
    futures = [executor.submit(barrier.wait) for _ in range(n)]
    barrier.wait()
    for f in futures:
        f.result()


def _alive(executor: ThreadPoolExecutor, wait_s: float) -> int:
    """Its workers still alive once they have been idle for `wait_s` (polled until none remain)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(t.is_alive() for t in list(executor._threads)):
        time.sleep(0.05)
    return sum(t.is_alive() for t in list(executor._threads))


@pytest.mark.parametrize("kind", ["idle_exit", "stdlib"])
def test_a_bursts_workers_exit_when_idle_and_later_calls_still_run(kind: str) -> None:
    executor = IdleExitExecutor(6, idle_s=0.2) if kind == "idle_exit" else ThreadPoolExecutor(6)
    try:
        _burst(executor, 5)
        assert len(executor._threads) == 5
        left = _alive(executor, 30 if kind == "idle_exit" else 1)  # stdlib: idle 1 s is five idle_s
        if kind == "stdlib":
            assert left == 5  # kept for good: what the gateway's default executor did after an outage
            return
        assert left == 0 and executor.retired == 5
        assert executor.submit(lambda: 42).result() == 42  # a new worker for the next call
        _burst(executor, 3)
    finally:
        executor.shutdown(wait=True)
    assert not any(t.is_alive() for t in executor._threads)


def test_as_the_loops_default_executor_to_thread_runs_on_it() -> None:
    async def main() -> tuple[str, int]:
        executor = IdleExitExecutor(4, idle_s=0.2)
        asyncio.get_running_loop().set_default_executor(executor)
        name = await asyncio.to_thread(lambda: threading.current_thread().name)
        total = sum(await asyncio.gather(*(asyncio.to_thread(lambda i=i: i) for i in range(50))))
        return name, total

    name, total = asyncio.run(main())  # asyncio.run shuts the default executor down at the end
    assert name.startswith("hybridgw-executor") and total == sum(range(50))


def test_many_short_calls_with_idle_timeouts_lose_none() -> None:
    executor = IdleExitExecutor(4, idle_s=0.001)  # workers retire between calls: the retire/submit race
    try:
        results = []
        for i in range(300):
            results.append(executor.submit(lambda i=i: i))
            if i % 7 == 0:
                time.sleep(0.002)
        assert [f.result(timeout=30) for f in results] == list(range(300))
    finally:
        executor.shutdown(wait=True)
