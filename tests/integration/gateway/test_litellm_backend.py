"""The litellm backend (for non-OpenAI providers), exercised through litellm's own OpenAI provider
against the fake upstream: normalised chunks, usage, and error statuses reach the SDK client."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.gateway.conftest import create_key
from tests.support import procs


@pytest.fixture(scope="module")
def litellm_gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    root: Path = tmp_path_factory.mktemp("litellm-gw")
    config = root / "policy.yaml"
    config.write_text(f"""
backends:
  via_litellm: {{kind: litellm, model: openai, base_url: "{fake_upstream}/v1", api_key: k}}
models:
  lm: {{deployments: [{{backend: via_litellm, model: m}}]}}
  lm-limited: {{deployments: [{{backend: via_litellm, model: "m;status=429;message=provider says wait"}}]}}
  lm-moved: {{deployments: [{{backend: via_litellm, model: "m;redirect=/elsewhere"}}]}}
teams: {{red: {{}}}}
""")
    key = create_key(root / "data", "red", config)
    env = {"HYBRIDGW_DATA_DIR": str(root / "data")}
    with procs.gateway(config, env, "gateway-litellm", timeout_s=120) as (url, _):
        with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
            client.fake_url = fake_upstream  # type: ignore[attr-defined]
            yield client


def test_non_streamed(litellm_gateway: openai.OpenAI) -> None:
    raw = litellm_gateway.chat.completions.with_raw_response.create(
        model="lm", messages=[{"role": "user", "content": "a b c"}])
    reply = raw.parse()
    assert raw.headers["x-hybridgw-backend"] == "via_litellm"
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 "
    assert reply.usage is not None and reply.usage.completion_tokens == 4


def test_streamed_chunks_are_openai_chunks(litellm_gateway: openai.OpenAI) -> None:
    chunks = list(litellm_gateway.chat.completions.create(
        model="lm", messages=[{"role": "user", "content": "x"}], stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert any(c.usage is not None and c.usage.completion_tokens == 4 for c in chunks)


def test_provider_errors_keep_status_and_message(litellm_gateway: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        litellm_gateway.chat.completions.create(model="lm-limited", messages=[{"role": "user", "content": "x"}])
    assert "provider says wait" in info.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_redirect_is_not_followed(litellm_gateway: openai.OpenAI, stream: bool) -> None:
    """As for the openai kind: a 307 would have litellm's client re-POST the prompt (and our key, on the
    same origin) wherever the provider points; the client sees a 502 and only the named address is called."""
    fake = litellm_gateway.fake_url  # type: ignore[attr-defined]
    with pytest.raises(openai.APIStatusError) as info:
        reply = litellm_gateway.chat.completions.create(model="lm-moved", messages=[{"role": "user", "content": "x"}],
                                                        stream=stream)
        if stream:
            list(reply)  # type: ignore[arg-type]
    assert info.value.status_code == 502 and "redirect" in info.value.message
    assert httpx.get(f"{fake}/_last_request").json()["path"] == "/v1/chat/completions"  # never /elsewhere
