"""Chat completions through the gateway with the official openai SDK, sync and async, streamed and not."""
from __future__ import annotations

import asyncio

import openai

from tests.integration.gateway.conftest import UPSTREAM_KEY, Gateway

MESSAGES = [{"role": "user", "content": "hello there"}]


def test_non_streamed_reply_usage_and_headers(gateway: Gateway, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    reply = raw.parse()
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 "
    assert reply.usage is not None and reply.usage.completion_tokens == 4 and reply.usage.prompt_tokens == 2
    assert raw.headers["x-hybridgw-backend"] == "fake"
    assert raw.headers["x-hybridgw-route-rule"] == "default"
    record = gateway.record_for(raw.headers["x-request-id"])
    assert (record["team"], record["model_alias"], record["status"]) == ("red", "m", "ok")
    assert (record["prompt_tokens"], record["completion_tokens"], record["usage_source"]) == (2, 4, "upstream")
    assert record["stream"] is False and record["e2e_s"] > 0


def test_streamed_without_include_usage_hides_usage(gateway: Gateway, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    assert all(c.choices for c in chunks), "the usage-only chunk must be stripped"
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    # ...but the gateway asked the upstream for usage, so its record has the upstream's numbers.
    sent = gateway.last_upstream_request()["body"]
    assert sent["stream_options"] == {"include_usage": True}


def test_streamed_with_include_usage_keeps_usage_chunk(gateway: Gateway, client: openai.OpenAI) -> None:
    stream = client.chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = list(stream.parse())
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    record = gateway.record_for(stream.headers["x-request-id"])
    assert record["usage_source"] == "upstream" and record["completion_tokens"] == 4
    assert record["ttft_s"] is not None and record["itl_p50_s"] is not None
    assert record["ttft_s"] <= record["e2e_s"]
    assert record["finish_reason"] == "stop"


def test_missing_upstream_usage_is_counted(gateway: Gateway, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="nousage", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    record = gateway.record_for(raw.headers["x-request-id"])
    assert record["usage_source"] == "counted"
    assert record["completion_tokens"] >= 5  # tiktoken's count of the streamed text
    plain = client.chat.completions.with_raw_response.create(model="nousage", messages=MESSAGES)
    assert plain.parse().usage is None
    assert gateway.record_for(plain.headers["x-request-id"])["completion_tokens"] >= 5


def test_async_client_streamed_and_not(gateway: Gateway) -> None:
    async def run() -> tuple[str, str]:
        async with gateway.async_client() as client:
            reply = await client.chat.completions.create(model="m", messages=MESSAGES)
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return reply.choices[0].message.content or "", "".join(parts)

    plain, streamed = asyncio.run(run())
    assert plain == streamed == "tok0 tok1 tok2 tok3 "


def test_many_concurrent_async_streams(gateway: Gateway) -> None:
    async def one(client: openai.AsyncOpenAI, i: int) -> str:
        stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"n{i}"}],
                                                      stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def run() -> list[str]:
        async with gateway.async_client() as client:
            return await asyncio.gather(*(one(client, i) for i in range(24)))

    assert asyncio.run(run()) == ["tok0 tok1 tok2 tok3 "] * 24


def test_parameters_and_allowed_extras_pass_through(gateway: Gateway, client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "description": "d",
                                               "parameters": {"type": "object", "properties": {}}}}]
    client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x", "name": "ann"}], tools=tools,
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        response_format={"type": "json_object"}, n=2, stop=["\n\n", "END"], seed=7, temperature=0.3,
        top_p=0.9, logprobs=True, top_logprobs=2, max_tokens=33, user="u-1",
        extra_body={"custom_field": {"nested": [1, 2]}, "guided_json": {"type": "object"}},
    )
    sent = gateway.last_upstream_request()
    body = sent["body"]
    assert body["model"] == "m"
    assert body["tools"] == tools and body["tool_choice"]["function"]["name"] == "lookup"
    assert body["response_format"] == {"type": "json_object"}
    assert (body["n"], body["stop"], body["seed"], body["temperature"], body["top_p"]) == (
        2, ["\n\n", "END"], 7, 0.3, 0.9)
    assert (body["logprobs"], body["top_logprobs"], body["max_tokens"], body["user"]) == (True, 2, 33, "u-1")
    # An extra the backend allows (extra_body_fields) passes; one it does not is dropped.
    assert "custom_field" not in body and body["guided_json"] == {"type": "object"}
    assert body["messages"] == [{"role": "user", "content": "x", "name": "ann"}]
    assert "stream_options" not in body  # only added for streamed requests
    # The upstream sees the backend's own key, never the client's.
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_n_choices_streamed(gateway: Gateway, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True, n=2))
    indexes = {ch.index for c in chunks for ch in c.choices}
    assert indexes == {0, 1}
