"""OpenAI-shaped refusals: impossible requests (with the numbers), bad fields, unknown model, full queue."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration.engine.conftest import Engine

MODEL = "tiny-random"
ASK = [{"role": "user", "content": "Hello"}]


def test_request_beyond_the_context_is_400_with_the_numbers(tiny_engine: Engine) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        tiny_engine.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=5000)
    body = err.value.body
    assert isinstance(body, dict)
    assert body["code"] == "context_length_exceeded" and body["type"] == "invalid_request_error"
    assert "4096" in body["message"] and "5000" in body["message"]


def test_request_beyond_the_whole_kv_pool_is_400_with_the_numbers(small_pool_engine: Engine) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        small_pool_engine.client().completions.create(model=MODEL, prompt="Hello", max_tokens=400)
    assert isinstance(err.value.body, dict)
    message = err.value.body["message"]
    assert "10 blocks" in message and "KV blocks" in message


@pytest.mark.parametrize(("field", "value"), [("n", 2), ("temperature", 5), ("top_p", 0), ("max_tokens", 0)])
def test_bad_fields_are_400_naming_the_field(tiny_engine: Engine, field: str, value: float) -> None:
    resp = httpx.post(f"{tiny_engine.url}/v1/chat/completions",
                      json={"model": MODEL, "messages": ASK, field: value})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == field


SCHEMA = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}


@pytest.mark.parametrize("fmt", [{"type": "json_object"}, SCHEMA])
@pytest.mark.parametrize("stream", [False, True])
def test_structured_output_is_refused_not_ignored(tiny_engine: Engine, fmt: dict, stream: bool) -> None:
    """The engine cannot constrain its output to JSON: it answered free text as if it had."""
    with pytest.raises(openai.BadRequestError) as err:
        tiny_engine.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=3, stream=stream,
                                                     response_format=fmt)  # type: ignore[call-overload]
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "response_format"
    assert body["code"] == "structured_output_unsupported" and fmt["type"] in body["message"]
    plain = tiny_engine.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=3,
                                                         response_format={"type": "text"})
    assert plain.choices[0].message.content is not None
    guided = httpx.post(f"{tiny_engine.url}/v1/completions",
                        json={"model": MODEL, "prompt": "x", "max_tokens": 2, "guided_json": {"type": "object"}})
    assert guided.status_code == 400 and guided.json()["error"]["param"] == "guided_json"


def test_malformed_bodies_are_400_not_500(tiny_engine: Engine) -> None:
    url = f"{tiny_engine.url}/v1/chat/completions"
    not_json = httpx.post(url, content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    no_role = httpx.post(url, json={"model": MODEL, "messages": [{"content": "x"}]})
    assert no_role.status_code == 400 and no_role.json()["error"]["param"] == "messages.0.role"
    bad_ids = httpx.post(f"{tiny_engine.url}/v1/completions", json={"model": MODEL, "prompt": [1, 10**9]})
    assert bad_ids.status_code == 400 and bad_ids.json()["error"]["param"] == "prompt"


def test_unknown_model_is_404(tiny_engine: Engine) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        tiny_engine.client().chat.completions.create(model="gpt-nope", messages=ASK)
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "model_not_found"


def test_full_queue_is_503_with_retry_after(one_slot_engine: Engine) -> None:
    url = f"{one_slot_engine.url}/v1/completions"
    long = {"model": MODEL, "prompt": "Hello", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as http, http.stream("POST", url, json=long) as first:
        lines = first.iter_lines()
        assert next(lines).startswith("data: ")  # running
        with http.stream("POST", url, json=long) as second:
            assert second.status_code == 200
            one_slot_engine.wait_for(lambda s: s["num_running"] == 1 and s["num_waiting"] == 1)
            third = http.post(url, json={"model": MODEL, "prompt": "Hello", "max_tokens": 2})
            assert third.status_code == 503
            assert third.headers["retry-after"] == "1"
            assert third.json()["error"]["code"] == "engine_full"
    state = one_slot_engine.wait_for(lambda s: s["num_running"] == 0 and s["num_waiting"] == 0)
    assert state["num_blocks_free"] == state["num_blocks_total"]
