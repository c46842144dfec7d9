"""The engine through the official openai SDK (sync and async, streamed and not) on the tiny model."""
from __future__ import annotations

import asyncio

import httpx

from tests.integration.engine.conftest import Engine

MODEL = "tiny-random"
PROMPTS = ["Hello there", "The capital of France is", "one two three four five six",
           "Write a poem about the sea", "Tell me a story about a lighthouse keeper", "abc"]


def ask(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def test_chat_non_streamed_reports_usage_and_length(tiny_engine: Engine) -> None:
    resp = tiny_engine.client().chat.completions.create(model=MODEL, messages=ask("Hello"), max_tokens=8,
                                                        temperature=0)
    choice = resp.choices[0]
    assert choice.finish_reason == "length" and choice.message.role == "assistant"
    assert choice.message.content
    counted = httpx.post(f"{tiny_engine.url}/tokenize", json={"messages": ask("Hello")}).json()
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == counted["count"] and resp.usage.completion_tokens == 8
    assert resp.usage.total_tokens == counted["count"] + 8
    assert resp.model == MODEL


def test_chat_streamed_equals_non_streamed_and_ends_with_usage(tiny_engine: Engine) -> None:
    client = tiny_engine.client()
    whole = client.chat.completions.create(model=MODEL, messages=ask("Tell me"), max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=ask("Tell me"), max_tokens=12,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_async_completions_streamed_and_not(tiny_engine: Engine) -> None:
    async def run() -> tuple[str, str, str | None]:
        client = tiny_engine.async_client()
        whole = await client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=10,
                                                temperature=0)
        stream = await client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=10,
                                                 temperature=0, stream=True)
        pieces = [c.choices[0].text async for c in stream]
        await client.close()
        return whole.choices[0].text, "".join(pieces), whole.choices[0].finish_reason

    whole, streamed, reason = asyncio.run(run())
    assert whole and whole == streamed and reason == "length"


def test_concurrent_greedy_requests_equal_each_alone(tiny_engine: Engine) -> None:
    client = tiny_engine.client()
    alone = [client.chat.completions.create(model=MODEL, messages=ask(p), max_tokens=16,
                                            temperature=0).choices[0].message.content for p in PROMPTS]
    assert len(set(alone)) == len(PROMPTS)

    async def together() -> list[str | None]:
        aclient = tiny_engine.async_client()
        resps = await asyncio.gather(*(aclient.chat.completions.create(model=MODEL, messages=ask(p),
                                                                       max_tokens=16, temperature=0)
                                       for p in PROMPTS))
        await aclient.close()
        return [r.choices[0].message.content for r in resps]

    assert asyncio.run(together()) == alone


def test_stop_string_is_trimmed(tiny_engine: Engine) -> None:
    client = tiny_engine.client()
    text = client.completions.create(model=MODEL, prompt="The sea", max_tokens=12, temperature=0).choices[0].text
    stop = text[4:7]
    resp = client.completions.create(model=MODEL, prompt="The sea", max_tokens=12, temperature=0, stop=[stop])
    assert resp.choices[0].text == text[:text.index(stop)]
    assert resp.choices[0].finish_reason == "stop"


def test_logprobs_per_generated_token(tiny_engine: Engine) -> None:
    resp = tiny_engine.client().chat.completions.create(model=MODEL, messages=ask("Hi"), max_tokens=5,
                                                        temperature=0, logprobs=True, top_logprobs=2)
    content = resp.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 5
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 2
        assert item.top_logprobs[0].logprob >= item.logprob - 1e-4  # greedy took the best


def test_seeded_sampling_is_reproducible(tiny_engine: Engine) -> None:
    client = tiny_engine.client()
    texts = {client.completions.create(model=MODEL, prompt="Hello", max_tokens=12, temperature=1.0,
                                       seed=7).choices[0].text for _ in range(2)}
    assert len(texts) == 1


def test_models_and_tokenize(tiny_engine: Engine) -> None:
    models = tiny_engine.client().models.list()
    assert [m.id for m in models.data] == [MODEL]
    tok = httpx.post(f"{tiny_engine.url}/tokenize", json={"prompt": "hello world"}).json()
    assert tok["count"] == len(tok["tokens"]) > 0 and tok["max_model_len"] == 4096
    bad = httpx.post(f"{tiny_engine.url}/tokenize", json={})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "prompt"
