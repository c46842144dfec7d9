"""A long queue spills, end to end: a burst of long requests larger than the engine's queue is split
between the engine (its default 64 running slots, a short queue) and hosted, decided before each call
from what the gateway has in flight, not from an engine poll that cannot have seen the burst yet."""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator

import pytest

from observability.stores import UsageStore
from observability.usage import UsageRecord
from observability.wiring import open_store
from tests.integration.routing.conftest import Fake, Gateway, serving, wait_until
from tests.support.policy_text import engine_and_hosted

MAX_WAITING = 2  # the policy's "short queue" for the engine
BURST = 8


def _policy(fake: str) -> str:
    # The engine's default 64 running slots, which the burst does not fill; the engine itself would
    # queue up to 8 (its own 503 limit), so a burst that goes all local would be accepted there: only the
    # router's queue check can spill it. Polled once a minute: no poll lands inside the burst, which the
    # router sees only through what it sent (counted as waiting, free slots or not: the engine admits
    # prompts as its per-step token budget allows, which fills long before the slots).
    args = ["--max-waiting", "8"]
    local = f"max_waiting: {MAX_WAITING}, engine_args: {json.dumps(args)}"
    return "\nversion: 1\n" + engine_and_hosted(fake, local) + """\
teams: {red: {}}
health: {poll_interval_s: 60, stale_after_s: 600}
rules:
  - name: local-while-the-queue-is-short
    strategy: kv_fit
    local: [local]
    spill: [hosted]
"""


@pytest.fixture(scope="module")
def gateway(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with serving(tmp_path_factory.mktemp("queue"), _policy(fake.url)) as gw:
        yield gw


async def _open_burst(gw: Gateway) -> list[tuple[int, str | None, str | None]]:
    """Open BURST long streams at once; each is known by its headers (sent at its first chunk) and
    all stay open until every one has answered, so no local request ends during the burst."""
    async with gw.async_client() as client:
        async def one(i: int):  # type: ignore[no-untyped-def]
            return await client.chat.completions.with_raw_response.create(
                model="chat", messages=[{"role": "user", "content": f"hello {i}"}], max_tokens=3500,
                stream=True, extra_body={"ignore_eos": True})

        raws = await asyncio.gather(*(one(i) for i in range(BURST)))
        seen = [(r.status_code, r.headers.get("x-hybridgw-backend"), r.headers.get("x-request-id")) for r in raws]
        for raw in raws:
            await raw.parse().close()  # aborts the engine's sequences
    return seen


def test_a_burst_beyond_the_engine_queue_spills_the_excess_to_hosted(gateway: Gateway, fake: Fake) -> None:
    warm = gateway.chat("chat", max_tokens=4)  # the engine is polled and known to be idle
    assert (warm.status, warm.backend) == (200, "local"), warm
    before = fake.requests()
    seen = asyncio.run(_open_burst(gateway))
    assert all(status == 200 for status, _, _ in seen), seen
    backends = [backend for _, backend, _ in seen]
    local, hosted = backends.count("local"), backends.count("hosted")
    # Sent since the poll, each counts as waiting: 0, 1 and 2 found the queue short, the rest spilled (the
    # old estimate counted them only beyond the 64 slots, and all eight went local).
    assert local + hosted == BURST and local == MAX_WAITING + 1, backends
    assert fake.requests() - before == hosted
    # Each went where the decision sent it: no engine refusal (503) fell through to hosted.
    store = open_store(os.environ.get("REDIS_URL") or None, gateway.data_dir)  # the ledger the gateway writes
    try:
        for _, backend, request_id in seen:
            line = gateway.record_for(request_id)
            assert "skipped" not in line and "engine_view" not in line, backend  # the access line stays short
            # The ledger keeps the engine as the router saw it (what `hybridgw replay` checks itself against):
            # the queue it estimated was short for those it kept, long for those it spilled.
            view = _ledgered(store, request_id).engine_view["local"]
            assert view.age_s >= 0 and view.free is not None and view.polled_s + view.age_s >= 0, view
            assert (view.queued <= MAX_WAITING) == (backend == "local"), (backend, view)
    finally:
        store.close()


def _ledgered(store: UsageStore, request_id: str | None) -> UsageRecord:
    def found() -> UsageRecord | None:
        return next((r for r in store.records("red", 0.0, time.time() + 60) if r.request_id == request_id), None)

    return wait_until(found, f"the ledger's record of {request_id}", 10)
