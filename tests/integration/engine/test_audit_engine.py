"""Audit probes of the engine server: NaN sampling settings (Python's JSON reads `NaN`, and pydantic reads
the string "nan") passed every range check and sampled garbage; FastAPI's own refusals (no such route,
wrong method, a body it cannot parse) answered `{"detail": ...}` instead of an OpenAI-shaped error."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.engine.conftest import Engine

MODEL = "tiny-random"


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("field, value", [
    ("temperature", "NaN"), ("top_p", "NaN"), ("presence_penalty", "NaN"), ("frequency_penalty", "NaN"),
    ("temperature", '"nan"'), ("presence_penalty", '"nan"'),
])
def test_nan_sampling_settings_are_400_naming_the_field(tiny_engine: Engine, field: str, value: str) -> None:
    raw = f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": 2, "{field}": {value}}}'
    response = httpx.post(f"{tiny_engine.url}/v1/chat/completions", content=raw.encode(),
                          headers={"content-type": "application/json"}, timeout=60)
    error = assert_openai_error(response, 400)
    assert error["param"] == field


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1/nothing-here", 404), ("GET", "/v1/chat/completions", 405), ("PUT", "/v1/completions", 405),
])
def test_unknown_routes_and_methods_are_openai_shaped(tiny_engine: Engine, method: str, path: str, status: int) -> None:
    assert_openai_error(httpx.request(method, f"{tiny_engine.url}{path}", timeout=30), status)


def test_a_body_too_deep_to_parse_is_an_openai_shaped_400(tiny_engine: Engine) -> None:
    response = httpx.post(f"{tiny_engine.url}/v1/chat/completions", content=b"[" * 5000 + b"]" * 5000,
                          headers={"content-type": "application/json"}, timeout=30)
    assert_openai_error(response, 400)


@pytest.mark.parametrize("path, raw", [
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "a\\ud800b"}], "max_tokens": 2}'),
    ("/v1/completions", b'{"prompt": "a\\ud800b", "max_tokens": 2}'),
    ("/tokenize", b'{"prompt": "a\\ud800b"}'),
])
def test_a_lone_surrogate_in_the_text_is_served_not_a_500(tiny_engine: Engine, path: str, raw: bytes) -> None:
    # Python's JSON reads "\ud800" (a lone UTF-16 surrogate); the tokenizer refused the str (a TypeError, 500)
    response = httpx.post(f"{tiny_engine.url}{path}", content=raw, headers={"content-type": "application/json"},
                          timeout=60)
    assert response.status_code == 200, response.text[:500]
