"""The litellm backend's call arguments: litellm's own settings come from the backend's spec, never
from the request body, even when an operator's extra_body_fields would let one through."""
from __future__ import annotations

from gateway.backends.base import UpstreamRequest
from gateway.backends.litellm_backend import LiteLLMBackend
from gateway.catalog import ResolvedBackend

HOSTILE = {"api_base": "http://evil/v1", "base_url": "http://evil/v1", "api_key": "client", "timeout": 0.001,
           "custom_llm_provider": "openai", "extra_headers": {"x": "1"}, "aws_secret_access_key": "s",
           "vertex_project": "p", "mock_response": "m", "metadata": {}, "litellm_params": {}, "num_retries": 9,
           "client": "evil"}


def _kwargs(base_url: str | None, api_key: str | None) -> dict:
    backend = LiteLLMBackend(ResolvedBackend(name="b", kind="litellm", base_url=base_url, api_key=api_key,
                                             model_prefix="anthropic"))
    body = {"model": "claude", "messages": [], "temperature": 0, **HOSTILE}
    return backend._kwargs(UpstreamRequest("chat/completions", body, "req", False, {}))


def test_settings_come_from_the_spec() -> None:
    kwargs = _kwargs("http://provider/v1", "server-key")
    assert kwargs == {"model": "anthropic/claude", "messages": [], "temperature": 0, "api_base": "http://provider/v1",
                      "api_key": "server-key", "timeout": 60.0, "drop_params": True}


def test_a_spec_without_a_url_or_key_still_takes_none_from_the_body() -> None:
    kwargs = _kwargs(None, None)
    assert (kwargs["api_base"], kwargs["api_key"]) == (None, None)  # litellm's own default / environment
    assert not set(kwargs) & (set(HOSTILE) - {"api_base", "api_key", "timeout"})  # "client" too: only ours
