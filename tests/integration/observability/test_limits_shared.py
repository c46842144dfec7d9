"""The workers' shared limiter over the supervisor's real unix socket: two clients (two workers'
connections) racing for one window get exactly its limit between them; settles land; with the
supervisor gone a reservation fails open instead of failing the request."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from observability.counts_server import CountsServer
from observability.limits import plan_charges
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_protocol import LimitExceeded
from observability.limits_shared import CountsClient, SharedLimiter
from observability.window_counts import WindowCounts

NOW = time.time()  # one fixed minute for the race: no window boundary in the middle of it
CONFIG = LimitsConfig(teams={"t": TeamLimits(requests_per_minute=25, tokens_per_minute=1000)})


async def _race(path: Path) -> tuple[list[bool], SharedLimiter]:
    limiters = [SharedLimiter(CountsClient(path), CONFIG, clock=lambda: NOW) for _ in range(2)]

    async def one(i: int) -> bool:
        try:
            await limiters[i % 2].reserve(f"r{i}", "t", "k", 10, 0.0)
            return True
        except LimitExceeded:
            return False

    results = list(await asyncio.gather(*(one(i) for i in range(60))))
    await limiters[1].aclose()
    return results, limiters[0]


def test_two_workers_racing_share_one_exact_window(tmp_path: Path) -> None:
    async def scenario() -> None:
        counts = WindowCounts()
        server = CountsServer(counts, tmp_path / "c.sock", status=lambda: {"count": 2})
        await server.start()
        try:
            results, limiter = await _race(tmp_path / "c.sock")
            client = CountsClient(tmp_path / "c.sock")
            assert await client.call(["s"]) == {"count": 2}  # the supervisor's status, on the same socket
            await client.aclose()
            await limiter.aclose()
        finally:
            await server.aclose()
        assert results.count(True) == 25
        keys = [c.key for c in plan_charges(CONFIG, "t", "k", 10, 0.0, NOW)]
        assert counts.read(keys) == [25, 250]  # requests and tokens of exactly the admitted ones

    asyncio.run(scenario())


def test_settles_reach_the_shared_window(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = CountsServer(WindowCounts(), tmp_path / "c.sock")
        await server.start()
        limiter = SharedLimiter(CountsClient(tmp_path / "c.sock"), LimitsConfig(
            teams={"t": TeamLimits(tokens_per_minute=100)}), clock=lambda: NOW)
        try:
            held = await limiter.reserve("a", "t", "k", 90, 0.0)
            with pytest.raises(LimitExceeded):
                await limiter.reserve("b", "t", "k", 20, 0.0)
            await limiter.settle(held, 10, 0.0)  # the actuals were far below the estimate
            await limiter.reserve("c", "t", "k", 20, 0.0)  # answered after the settle on the same connection
            other = SharedLimiter(CountsClient(tmp_path / "c.sock"), limiter.config, clock=lambda: NOW)
            [tokens] = await other.usage("t", "k")  # what another worker sees (budget status, console)
            assert (tokens.limit_name, tokens.used, tokens.limit) == ("tokens_per_minute", 30, 100)
            await other.aclose()
            assert not limiter.state().failing_open
        finally:
            await limiter.aclose()
            await server.aclose()

    asyncio.run(scenario())


def test_without_the_supervisor_reservations_fail_open(tmp_path: Path) -> None:
    async def scenario() -> None:
        limiter = SharedLimiter(CountsClient(tmp_path / "absent.sock"), CONFIG)
        reservation = await limiter.reserve("a", "t", "k", 10_000, 0.0)
        assert reservation.window_keys == ()  # nothing held, nothing to settle
        await limiter.check_requests("t", "k")
        state = limiter.state()  # /readyz and /metrics say so
        assert (state.failing_open, state.reason) == (True, "counts_unreachable")
        assert state.outages == {"reserve": 1, "check_requests": 1}
        await limiter.aclose()

    asyncio.run(scenario())


def test_a_reservation_whose_caller_went_away_gives_its_charge_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        counts = WindowCounts()
        server = CountsServer(counts, tmp_path / "c.sock")
        await server.start()
        limiter = SharedLimiter(CountsClient(tmp_path / "c.sock"), CONFIG, clock=lambda: NOW)
        try:
            await limiter._client.call(["s"])  # connected: the next reserve sends at once
            task = asyncio.create_task(limiter.reserve("gone", "t", "k", 10, 0.0))
            await asyncio.sleep(0)  # it has sent its charge and waits for the answer
            task.cancel()  # e.g. the client disconnected
            keys = [c.key for c in plan_charges(CONFIG, "t", "k", 10, 0.0, NOW)]
            # On the one connection: the charge, this read, then (once the charge is answered) the give-back.
            assert await limiter._client.call(["r", keys]) == [1, 10]
            assert await limiter._client.call(["r", keys]) == [0, 0]
            assert task.cancelled()
        finally:
            await limiter.aclose()
            await server.aclose()

    asyncio.run(scenario())
