"""Legacy completions and embeddings through the gateway with the SDK."""
from __future__ import annotations

import openai

from tests.integration.gateway.conftest import Gateway


def test_completions_streamed_and_not(gateway: Gateway, client: openai.OpenAI) -> None:
    reply = client.completions.create(model="m", prompt="say something", max_tokens=5)
    assert reply.choices[0].text == "tok0 tok1 tok2 tok3 "
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    parts = [c.choices[0].text for c in client.completions.create(model="m", prompt="x", stream=True) if c.choices]
    assert "".join(parts) == "tok0 tok1 tok2 tok3 "
    assert gateway.last_upstream_request()["path"] == "/v1/completions"


def test_completions_include_usage(gateway: Gateway, client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="m", prompt="x y z", stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3


def test_embeddings_pass_through(gateway: Gateway, client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="m", input=["alpha", "beta gamma"],
                                                     encoding_format="float")
    result = raw.parse()
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    assert raw.headers["x-hybridgw-backend"] == "fake"
    sent = gateway.last_upstream_request()
    assert sent["path"] == "/v1/embeddings" and sent["body"]["input"] == ["alpha", "beta gamma"]
    record = gateway.record_for(raw.headers["x-request-id"])
    assert record["prompt_tokens"] == 3 and record["operation"] == "embeddings"
