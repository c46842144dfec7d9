"""The engine-state poller against a real HTTP state server that answers with what our parsers
choke on (a block count of 1e999 overflows int(), in both formats): the poller lives on, reports the
error, and picks up the engine's state again once the answers are sane."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from policies.engine_poller import EngineStatePoller, StateSource

from .state_server import StateServer, serving

GOOD = {"model": "m", "kv_bytes_per_token": 512, "block_size": 16, "num_blocks_total": 100,
        "num_blocks_free": 80, "num_running": 1, "num_waiting": 0, "max_model_len": 4096}


async def _until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("fmt", ["hybridgw", "vllm"])
def test_the_poller_survives_answers_that_break_the_parser(fmt: str) -> None:
    async def scenario() -> None:
        async with serving(StateServer(state=dict(GOOD))) as server:
            path = "/v1/engine/state" if fmt == "hybridgw" else "/metrics"
            poller = EngineStatePoller([StateSource("eng", server.url + path, fmt, 512)], interval_s=0.02)
            await poller.start()
            try:
                await _until(lambda: "eng" in poller.snapshots, "a first snapshot")
                server.state["num_blocks_total"] = float("inf")  # JSON "Infinity": int() overflows
                server.vllm["blocks"] = "1e999"  # type: ignore[assignment]
                await _until(lambda: "OverflowError" in poller.errors.get("eng", ""), "the bad answer noticed")
                polls = server.polls
                await _until(lambda: server.polls > polls + 3, "polling goes on")
                server.state["num_blocks_total"] = 100
                server.vllm["blocks"] = 1000
                await _until(lambda: "eng" not in poller.errors, "the poller recovered")
                assert poller.snapshots["eng"].num_blocks_total in (100, 1000)
                assert poller.status.snapshot().state == "running"
            finally:
                await poller.stop()

    asyncio.run(scenario())
