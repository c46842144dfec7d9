"""`hybridgw engine --deterministic` as a real process: the same request gets the same tokens and
logprobs whether it runs alone or among others (openai SDK, tiny model in bf16, small token budget)."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.engine.conftest import Engine, engine_process

MODEL = "tiny-random"
PROMPTS = ["Hello there", "The capital of France is", "one two three four five six seven eight nine ten " * 3,
           "Write a poem about the sea", "Tell me a story about a lighthouse keeper, a long one please " * 2,
           "abc"]


@pytest.fixture(scope="module")
def deterministic_engine() -> Iterator[Engine]:
    with engine_process("--model", MODEL, "--dtype", "bf16", "--deterministic",
                        "--max-num-batched-tokens", "64") as engine:
        yield engine


def request(i: int, prompt: str) -> dict[str, Any]:
    sampled = i % 2 == 1  # half greedy, half seeded sampling: both must not depend on the batch
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 12,
            "temperature": 0.9 if sampled else 0.0, "seed": 1000 + i if sampled else None,
            "logprobs": True, "top_logprobs": 2, "extra_body": {"ignore_eos": True}}


def outcome(resp: Any) -> tuple[str, list[tuple[str, float, list[tuple[str, float]]]]]:
    choice = resp.choices[0]
    return choice.message.content, [(t.token, t.logprob, [(c.token, c.logprob) for c in t.top_logprobs])
                                    for t in choice.logprobs.content]


def test_outputs_alone_equal_outputs_together(deterministic_engine: Engine) -> None:
    client = deterministic_engine.client()
    alone = [outcome(client.chat.completions.create(**request(i, p))) for i, p in enumerate(PROMPTS)]

    async def together() -> list[Any]:
        async with deterministic_engine.async_client() as aclient:
            return await asyncio.gather(*(aclient.chat.completions.create(**request(i, p))
                                          for i, p in enumerate(PROMPTS)))

    concurrent = [outcome(r) for r in asyncio.run(together())]
    assert [len(lp) for _, lp in alone] == [12] * len(PROMPTS)
    assert concurrent == alone
