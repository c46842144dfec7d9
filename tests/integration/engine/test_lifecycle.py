"""Blocks come back after aborts and disconnects; a tiny pool preempts and still finishes every request;
/metrics and /v1/engine/state report what happened."""
from __future__ import annotations

import asyncio

import httpx

from tests.integration.engine.conftest import Engine, metric_value

MODEL = "tiny-random"
LONG = 4000  # tokens a request would take to finish on its own (ignore_eos): far more than it gets


def all_free(state: dict) -> bool:
    return state["num_running"] == 0 and state["num_waiting"] == 0 and \
        state["num_blocks_free"] == state["num_blocks_total"]


def finished_and_generated(engine: Engine) -> tuple[float, float]:
    text = engine.metrics()
    return (metric_value(text, "hybridgw_engine_requests_finished_total"),
            metric_value(text, "hybridgw_engine_generation_tokens_total"))


def test_streaming_client_disconnect_frees_blocks(tiny_engine: Engine) -> None:
    finished, generated = finished_and_generated(tiny_engine)
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": LONG, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{tiny_engine.url}/v1/completions", json=body, timeout=60) as resp:
        lines = resp.iter_lines()
        for _ in range(3):
            next(lines)
        assert tiny_engine.state()["num_running"] == 1
    tiny_engine.wait_for(all_free)
    finished_after, generated_after = finished_and_generated(tiny_engine)
    assert finished_after == finished  # aborted, not run to the end
    assert generated_after - generated < LONG


def test_non_streamed_client_disconnect_frees_blocks(tiny_engine: Engine) -> None:
    finished, _ = finished_and_generated(tiny_engine)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": LONG,
            "ignore_eos": True}
    try:
        httpx.post(f"{tiny_engine.url}/v1/chat/completions", json=body, timeout=1.0)
    except httpx.TimeoutException:
        pass
    tiny_engine.wait_for(all_free)
    assert finished_and_generated(tiny_engine)[0] == finished


def test_sdk_stream_closed_early_frees_blocks(tiny_engine: Engine) -> None:
    finished, _ = finished_and_generated(tiny_engine)
    stream = tiny_engine.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Go"}], max_tokens=LONG, stream=True,
        extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    tiny_engine.wait_for(all_free)
    assert finished_and_generated(tiny_engine)[0] == finished


def test_async_client_cancelled_mid_stream_frees_blocks(tiny_engine: Engine) -> None:
    finished, _ = finished_and_generated(tiny_engine)

    async def run() -> None:
        client = tiny_engine.async_client()

        async def consume() -> None:
            stream = await client.completions.create(model=MODEL, prompt="Go", max_tokens=LONG, stream=True,
                                                     extra_body={"ignore_eos": True})
            async for _ in stream:
                pass

        tasks = [asyncio.create_task(consume()) for _ in range(4)]
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()

    asyncio.run(run())
    tiny_engine.wait_for(all_free)
    assert finished_and_generated(tiny_engine)[0] == finished


def test_tiny_pool_preempts_and_every_request_matches_alone(small_pool_engine: Engine) -> None:
    prompts = ["Hello there", "The capital of France is", "Write a poem about the sea", "abc def"]
    # Each needs ~8 of the 10 blocks by its end: any two at once force a preemption.
    ask = {"model": MODEL, "max_tokens": 100, "temperature": 0}

    async def together() -> list[str]:
        client = small_pool_engine.async_client()
        resps = await asyncio.gather(*(client.completions.create(prompt=p, **ask) for p in prompts))  # type: ignore[call-overload]
        await client.close()
        return [r.choices[0].text for r in resps]

    concurrent = asyncio.run(together())
    state = small_pool_engine.wait_for(all_free)
    assert state["num_preemptions"] > 0
    assert metric_value(small_pool_engine.metrics(), "hybridgw_engine_preemptions_total") > 0
    client = small_pool_engine.client()
    alone = [client.completions.create(prompt=p, **ask).choices[0].text for p in prompts]  # type: ignore[call-overload]
    assert concurrent == alone


def test_engine_state_and_metrics_report_the_engine(tiny_engine: Engine) -> None:
    tiny_engine.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                                 max_tokens=4, temperature=0)
    state = tiny_engine.state()
    assert state["model"] == MODEL and state["block_size"] == 16
    assert state["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4  # layers x kv heads x head dim x fp32
    assert state["num_blocks_total"] == 4096 and state["max_model_len"] == 4096
    assert state["kv_dtype"] == "float32" and state["healthy"] is True
    assert state["decode_tokens_per_s"] > 0 and state["prefill_tokens_per_s"] > 0
    assert 0.0 <= state["prefix_cache_hit_rate"] <= 1.0
    text = tiny_engine.metrics()
    for name in ("hybridgw_engine_num_requests_running", "hybridgw_engine_num_requests_waiting",
                 "hybridgw_engine_kv_cache_usage_perc"):
        assert metric_value(text, name) == 0.0
    assert metric_value(text, "gen_ai_server_time_to_first_token_seconds_count") >= 1
    assert metric_value(text, "gen_ai_server_time_per_output_token_seconds_count") >= 3
    assert metric_value(text, "gen_ai_server_request_duration_seconds_count") >= 1
    assert metric_value(text, "hybridgw_engine_prompt_tokens_total") > 0
    assert metric_value(text, "hybridgw_engine_generation_tokens_total") >= 4
    health = httpx.get(f"{tiny_engine.url}/health")
    assert health.status_code == 200


def test_traceparent_header_is_accepted(tiny_engine: Engine) -> None:
    resp = httpx.post(f"{tiny_engine.url}/v1/completions",
                      json={"model": MODEL, "prompt": "Hi", "max_tokens": 2},
                      headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 2
