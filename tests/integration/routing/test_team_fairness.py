"""Team fairness end to end: one team floods a real engine while another holds a little of it; the
flood stops short of the room the quiet team may claim, the quiet team's next request still runs
locally, and as the flood's requests end the two settle at their equal shares. Counted from
x-hybridgw-backend on long streams held open (ended only when the test closes them), so nothing
depends on timing."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import openai
import pytest

from tests.integration.routing.conftest import Fake, Gateway, create_key, serving
from tests.support.policy_text import engine_and_hosted

MAX_TOKENS = 1000  # with a ~20-token prompt: 64 KV blocks of 16 tokens per request, held while it streams
SLOTS = 8  # the pool holds 8 such requests, not 9
POOL_BLOCKS = SLOTS * 64 + 32


def _policy(fake: str, enabled: bool) -> str:
    # tiny-random keeps 512 B per token. Only KV limits the engine here: a queue (prefill backlog on a
    # busy machine) up to 64 is accepted, so the counts do not depend on how fast it runs.
    args = ["--kv-cache-bytes", str(POOL_BLOCKS * 16 * 512), "--no-prefix-caching"]
    local = f"max_waiting: 64, engine_args: {json.dumps(args)}"
    return "\nversion: 1\n" + engine_and_hosted(fake, local) + f"""\
teams: {{red: {{share: 1}}, blue: {{share: 1}}}}
fairness: {{enabled: {str(enabled).lower()}, demand_window_s: 600}}
rules:
  - {{name: local-while-it-fits, strategy: kv_fit, local: [local], spill: [hosted]}}
"""


@pytest.fixture(scope="module")
def gateway(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with serving(tmp_path_factory.mktemp("fairness"), _policy(fake.url, True)) as gw:
        yield gw


async def _open(client: openai.AsyncOpenAI, streams: list, n: int) -> list[str | None]:
    """Open n long streams one after the other (each decided with the previous ones held), keep them
    in `streams` as (backend, request id, stream)."""
    backends = []
    for i in range(n):
        raw = await client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": f"hello {i}"}], max_tokens=MAX_TOKENS,
            stream=True, extra_body={"ignore_eos": True})
        assert raw.status_code == 200
        backend = raw.headers.get("x-hybridgw-backend")
        streams.append((backend, raw.headers.get("x-request-id"), raw.parse()))
        backends.append(backend)
    return backends


async def _end(gw: Gateway, streams: list, n: int) -> None:
    """Close n of the local streams and wait for their records: the gateway has given their slots back."""
    ending = [s for s in streams if s[0] == "local"][:n]
    for item in ending:
        await item[2].close()
        streams.remove(item)
    for _, request_id, _ in ending:
        await asyncio.to_thread(gw.record_for, request_id)


async def _flood(gw: Gateway, blue_key: str) -> dict[str, list[str | None]]:
    red_streams: list = []
    blue_streams: list = []
    red = gw.async_client()
    blue = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=blue_key, max_retries=0, timeout=30.0)
    try:
        seen = {"blue": await _open(blue, blue_streams, 2)}  # blue holds 2 of the 8 slots
        seen["red"] = await _open(red, red_streams, SLOTS)  # red floods
        seen["blue_after"] = await _open(blue, blue_streams, 2)
        await _end(gw, red_streams, 3)  # three of red's end: 3 slots free
        seen["red_again"] = await _open(red, red_streams, 3)
        seen["blue_again"] = await _open(blue, blue_streams, 2)
        return seen
    finally:
        for _, _, stream in red_streams + blue_streams:
            await stream.close()  # aborts the engine's sequences
        await red.close()
        await blue.close()


def test_a_flooding_team_leaves_the_quiet_team_its_room(gateway: Gateway, fake: Fake) -> None:
    warm = gateway.chat("chat", max_tokens=4)  # the engine is polled and known to be idle
    assert (warm.status, warm.backend) == (200, "local"), warm
    blue_key = create_key(gateway.data_dir, "blue", gateway.config)
    seen = asyncio.run(_flood(gateway, blue_key))
    assert seen["blue"] == ["local", "local"], seen
    # Red stops one slot short of full: blue lately held 2 and may claim one more (its share is 4).
    assert seen["red"] == ["local"] * 5 + ["hosted"] * 3, seen
    # That slot is blue's; then the engine is full for everyone.
    assert seen["blue_after"] == ["local", "hosted"], seen
    # Three of red's end. Red takes two back (up to its share, 4), and leaves the third to blue,
    # whose claim has grown to 4 (it held 3): 4 and 4, the teams' equal shares of the 8 slots.
    assert seen["red_again"] == ["local", "local", "hosted"], seen
    assert seen["blue_again"] == ["local", "hosted"], seen


def test_without_fairness_the_flood_takes_every_slot(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> None:
    with serving(tmp_path_factory.mktemp("unfair"), _policy(fake.url, False)) as gw:
        warm = gw.chat("chat", max_tokens=4)
        assert (warm.status, warm.backend) == (200, "local"), warm
        seen = asyncio.run(_flood(gw, create_key(gw.data_dir, "blue", gw.config)))
    assert seen["red"] == ["local"] * 6 + ["hosted"] * 2, seen
    assert seen["blue_after"] == ["hosted", "hosted"], seen
    assert seen["red_again"] == ["local"] * 3, seen  # red takes back every slot that frees
    assert seen["blue_again"] == ["hosted", "hosted"], seen
