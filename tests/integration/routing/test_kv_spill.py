"""KV full → spill to hosted, end to end: `kv_fit` keeps a request on the small-pool engine while
its prompt + max_tokens fit the free KV blocks, and sends it to hosted (or refuses it) when not."""
from __future__ import annotations

import asyncio

from tests.integration.routing.conftest import MESSAGES, Fake, Gateway, Routed, wait_until

LONG = {"extra_body": {"ignore_eos": True}}  # the engine decodes every max_tokens token


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"hello there {i}"}]


async def _burst(gw: Gateway, model: str, n: int, max_tokens: int) -> list[Routed]:
    async with gw.async_client() as client:
        return list(await asyncio.gather(*(gw.achat(client, model, max_tokens, messages=_messages(i), **LONG)
                                           for i in range(n))))


def test_a_request_that_fits_runs_on_the_engine(hybrid: Gateway) -> None:
    r = hybrid.chat("chat", max_tokens=8, **LONG)
    assert (r.status, r.backend, r.rule) == (200, "local", "local-while-it-fits")
    assert r.model == "tiny-random" and r.body.usage.completion_tokens == 8
    with hybrid.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, max_tokens=6, stream=True, stream_options={"include_usage": True}, **LONG)
        assert raw.headers["x-hybridgw-backend"] == "local"
        chunks = list(raw.parse())
    assert chunks[0].model == "tiny-random" and chunks[-1].usage.completion_tokens == 6


def test_a_request_larger_than_the_free_blocks_goes_to_hosted_without_trying_the_engine(
        hybrid: Gateway, fake: Fake) -> None:
    hybrid.chat("chat", max_tokens=4)  # the engine's own prompt count calibrates the gateway's
    before = fake.requests()
    r = hybrid.chat("chat", max_tokens=400)  # 400 output tokens alone need 25 blocks; the pool has 16
    assert (r.status, r.backend, r.rule) == (200, "hosted", "local-while-it-fits")
    assert r.model == "m" and fake.requests() == before + 1
    assert fake.last_request()["body"]["max_tokens"] == 400
    assert "skipped" not in hybrid.record_for(r.request_id)  # decided before the call, not by a failure
    with hybrid.client() as client:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, max_tokens=400,
                                                               stream=True)
        assert raw.headers["x-hybridgw-backend"] == "hosted"
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "tok0 tok1 tok2 tok3 "


def test_concurrent_long_requests_fill_the_pool_and_the_overflow_spills(hybrid: Gateway) -> None:
    hybrid.chat("chat", max_tokens=4)
    # Each needs ~9 of the 16 blocks: while one decodes, the others do not fit what is left.
    results = asyncio.run(_burst(hybrid, "chat", 4, 100))
    assert all(r.status == 200 for r in results), results
    backends = [r.backend for r in results]
    assert "local" in backends and "hosted" in backends, backends
    assert all(r.body.usage.completion_tokens == 100 for r in results if r.backend == "local")
    # The in-flight holds were given back: once the burst is over a long request fits again.
    wait_until(lambda: hybrid.chat("chat", max_tokens=100, **LONG).backend == "local", "engine free again", 30)


def test_back_to_back_long_requests_all_run_on_the_engine(hybrid: Gateway) -> None:
    """Each finished request's blocks are free again for the next, although the engine's polled
    state (up to a poll interval old) may still count them as used."""
    hybrid.chat("chat", max_tokens=4)
    wait_until(lambda: hybrid.chat("chat", max_tokens=100, **LONG).backend == "local", "engine free", 30)
    backends = [hybrid.chat("chat", max_tokens=100, messages=_messages(i), **LONG).backend for i in range(6)]
    assert backends == ["local"] * 6


def test_a_client_that_leaves_mid_stream_gives_its_blocks_back(hybrid: Gateway) -> None:
    """A leaked hold (15 of the 16 blocks) would send every later long request to hosted."""
    with hybrid.client() as client:
        stream = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=200, stream=True, **LONG)
        assert next(iter(stream)).model == "tiny-random"
        stream.close()
    wait_until(lambda: hybrid.chat("chat", max_tokens=100, **LONG).backend == "local", "blocks given back", 30)


def test_local_only_alias_gets_503_with_retry_after_while_the_pool_is_full(hybrid: Gateway) -> None:
    hybrid.chat("tiny", max_tokens=4)
    results = asyncio.run(_burst(hybrid, "tiny", 3, 100))
    served = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status != 200]
    assert served and all(r.backend == "local" for r in served), results
    assert refused, results
    for r in refused:
        assert r.status == 503 and int(r.retry_after or 0) >= 1, r
        assert r.body["code"] == "no_capacity" and "needs" in r.body["message"], r.body


def test_local_only_request_that_can_never_fit_is_400_not_retry_later(hybrid: Gateway) -> None:
    r = hybrid.chat("tiny", max_tokens=400)
    assert r.status == 400 and r.retry_after is None
    assert r.body["code"] == "context_length_exceeded" and r.body["param"] == "messages"
    assert "whole pool has 16" in r.body["message"]
