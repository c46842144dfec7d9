"""The real default model (SmolLM2-135M-Instruct, GGUF) answers through the openai SDK."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.engine.conftest import Engine, engine_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2() -> Iterator[Engine]:
    with engine_process("--model", "smollm2", timeout_s=600) as engine:
        yield engine


def test_capital_of_france_is_paris(smollm2: Engine) -> None:
    client = smollm2.client()
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    resp = client.chat.completions.create(model="smollm2", messages=ask, max_tokens=40, temperature=0)
    assert "Paris" in (resp.choices[0].message.content or "")
    streamed = client.chat.completions.create(model="smollm2", messages=ask, max_tokens=40, temperature=0,
                                              stream=True)
    assert "Paris" in "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
