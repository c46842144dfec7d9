"""The engine server's body limit: 413 (OpenAI-shaped) past it, with or without a Content-Length,
set with --max-body-bytes (default 4 MiB, as the gateway's); bodies within it are served as before."""
from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.integration.engine.conftest import Engine, engine_process

MODEL = "tiny-random"
LIMIT = 20_000
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def limited() -> Iterator[Engine]:
    with engine_process("--model", MODEL, "--max-body-bytes", str(LIMIT)) as engine:
        yield engine


def _body(content_bytes: int) -> bytes:
    # The bulk goes into `user` (an OpenAI field the engine ignores), not the prompt: the context is 4096 tokens.
    return json.dumps({"model": MODEL, "max_tokens": 2, "user": "x" * content_bytes,
                       "messages": [{"role": "user", "content": "Hi"}]}).encode()


def _chunked(body: bytes) -> Iterator[bytes]:
    for i in range(0, len(body), 4096):  # a generator: httpx sends it chunked, without a length
        yield body[i:i + 4096]


def _assert_too_large(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"
    assert str(limit) in error["message"]


def test_a_body_past_the_limit_is_413_and_one_within_it_is_served(limited: Engine) -> None:
    client = limited.client()
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=HI, user="x" * (LIMIT + 1))
    assert refused.value.status_code == 413
    reply = client.chat.completions.create(model=MODEL, max_tokens=2, messages=HI, user="x" * (LIMIT - 200))
    assert reply.usage is not None and reply.usage.completion_tokens == 2


def test_a_chunked_body_is_counted_as_it_arrives(limited: Engine) -> None:
    url = f"{limited.url}/v1/chat/completions"
    headers = {"content-type": "application/json"}
    _assert_too_large(httpx.post(url, content=_chunked(_body(LIMIT + 1)), headers=headers, timeout=60), LIMIT)
    served = httpx.post(url, content=_chunked(_body(LIMIT - 200)), headers=headers, timeout=60)
    assert served.status_code == 200 and served.json()["usage"]["completion_tokens"] == 2
    # The engine is unharmed: a streamed request still runs to the end.
    stream = limited.client().chat.completions.create(model=MODEL, messages=HI, max_tokens=3, stream=True)
    assert [c.choices[0].finish_reason for c in stream if c.choices][-1] == "length"


def test_the_default_limit_is_four_mib(tiny_engine: Engine) -> None:
    url = f"{tiny_engine.url}/v1/chat/completions"
    _assert_too_large(httpx.post(url, content=_body(4 * 1024 * 1024), timeout=60,
                                 headers={"content-type": "application/json"}), 4 * 1024 * 1024)
