"""Every error is OpenAI-shaped with the right status and the offending field named."""
from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.integration.gateway.conftest import Gateway

MESSAGES = [{"role": "user", "content": "hi"}]


def post(gateway: Gateway, body: Any = None, raw: bytes | None = None, path: str = "/v1/chat/completions",
         headers: dict[str, str] | None = None) -> httpx.Response:
    hdrs = {**gateway.auth(), "content-type": "application/json", **(headers or {})}
    if raw is None:
        return httpx.post(f"{gateway.url}{path}", json=body, headers=hdrs, timeout=30)
    return httpx.post(f"{gateway.url}{path}", content=raw, headers=hdrs, timeout=30)


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    assert response.headers["x-request-id"]
    return error


@pytest.mark.parametrize("body, param", [
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"messages": MESSAGES}, "model"),
    ({"model": "m", "messages": "hello"}, "messages"),
    ({"model": "m", "messages": [{"content": "no role"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "messages": MESSAGES, "max_tokens": -1}, "max_tokens"),
    ({"model": "m", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": MESSAGES, "max_tokens": 10**12}, "max_tokens"),
    ({"model": "m", "messages": MESSAGES, "max_tokens": "100"}, "max_tokens"),
    ({"model": "m", "messages": MESSAGES, "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": MESSAGES, "temperature": 7}, "temperature"),
    ({"model": "m", "messages": MESSAGES, "stream": "yes"}, "stream"),
    ({"model": "m", "messages": MESSAGES, "n": 0}, "n"),
    ({"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": "y"}},
     "stream_options.include_usage"),
    ({"model": "m", "messages": MESSAGES, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "m", "messages": MESSAGES, "top_logprobs": 2}, "top_logprobs"),
    ({"model": 3, "messages": MESSAGES}, "model"),
])
def test_bad_chat_bodies_are_400_naming_the_field(gateway: Gateway, body: Any, param: str) -> None:
    error = assert_error(post(gateway, body), 400, param)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_malformed_json_is_400(gateway: Gateway, raw: bytes) -> None:
    assert_error(post(gateway, raw=raw), 400)


@pytest.mark.parametrize("model", ["no-such-model", "gone"])  # gone: its only backend is absent (env unset)
def test_an_unknown_model_is_404(gateway: Gateway, model: str) -> None:
    error = assert_error(post(gateway, {"model": model, "messages": MESSAGES}), 404, "model")
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"


def test_unknown_model_with_the_sdk(gateway: Gateway, client: openai.OpenAI) -> None:
    # OpenAI answers an unknown model 404 model_not_found: the SDK's NotFoundError, not BadRequestError.
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert info.value.status_code == 404 and info.value.type == "invalid_request_error"
    assert info.value.param == "model" and info.value.code == "model_not_found"


def test_other_endpoints_validate_too(gateway: Gateway) -> None:
    assert_error(post(gateway, {"model": "m"}, path="/v1/completions"), 400, "prompt")
    assert_error(post(gateway, {"model": "m", "prompt": "x", "max_tokens": -5}, path="/v1/completions"),
                 400, "max_tokens")
    assert_error(post(gateway, {"model": "m", "input": 5.5}, path="/v1/embeddings"), 400, "input")
    assert_error(post(gateway, {"input": "x"}, path="/v1/embeddings"), 400, "model")


def test_body_over_the_limit_is_413(gateway: Gateway) -> None:
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * (4 * 1024 * 1024) + b'"}]}'
    error = assert_error(post(gateway, raw=big), 413)
    assert "limit" in error["message"]


def test_unknown_route_and_method_are_openai_shaped(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/nothing-here")
    assert response.status_code == 404 and "error" in response.json()
    response = httpx.get(f"{gateway.url}/v1/chat/completions")
    assert response.status_code == 405 and "error" in response.json()


@pytest.mark.parametrize("alias, status, exc_type, text", [
    ("limited", 429, openai.RateLimitError, "slow down please"),
    ("down", 502, openai.InternalServerError, "boom inside"),
    ("overloaded", 503, openai.InternalServerError, "try later"),
    ("badreq", 400, openai.BadRequestError, "upstream says no"),
    ("unreachable", 502, openai.InternalServerError, "unreachable"),
    ("stalls", 504, openai.InternalServerError, "timed out"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures_map_to_statuses_with_the_upstream_message(
        gateway: Gateway, client: openai.OpenAI, alias: str, status: int, exc_type: type[Exception], text: str,
        stream: bool) -> None:
    with pytest.raises(exc_type) as info:
        result = client.chat.completions.create(model=alias, messages=MESSAGES, stream=stream)
        if stream:
            list(result)  # type: ignore[arg-type]
    assert isinstance(info.value, openai.APIStatusError)
    assert info.value.status_code == status
    assert text in info.value.message
    request_id = info.value.response.headers["x-request-id"]
    record = gateway.record_for(request_id)
    assert record["status"] == "error" and record["http_status"] == status


def test_429_from_upstream_is_not_retried_by_us_but_reported(gateway: Gateway) -> None:
    response = post(gateway, {"model": "limited", "messages": MESSAGES})
    error = assert_error(response, 429)
    assert error["type"] == "rate_limit_error"


def test_fallback_to_next_target_on_5xx_before_first_byte(gateway: Gateway, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="fallback", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "tok0 tok1 tok2 tok3 "
    assert raw.headers["x-hybridgw-backend"] == "fake"
    stream = client.chat.completions.with_raw_response.create(model="fallback", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices) == "tok0 tok1 tok2 tok3 "
    assert stream.headers["x-hybridgw-backend"] == "fake"
    record = gateway.record_for(stream.headers["x-request-id"])
    assert record["backend"] == "fake" and record["status"] == "ok"
    assert record["skipped"][0]["backend"] == "flaky" and "flaky is down" in record["skipped"][0]["error"]


def test_fallback_past_an_unreachable_backend(gateway: Gateway, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="rescued", messages=MESSAGES, stream=True)
    assert list(raw.parse())
    assert raw.headers["x-hybridgw-backend"] == "fake"


def test_mid_stream_failure_sends_one_error_frame_then_done(gateway: Gateway) -> None:
    body = {"model": "midfail", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth(),
                      timeout=30) as response:
        assert response.status_code == 200
        text = response.read().decode()
        request_id = response.headers["x-request-id"]
    frames = [f for f in text.split("\n\n") if f]
    assert len(frames) == 5, frames  # the role chunk (as OpenAI opens), two chunks, the error, [DONE]
    assert '"tok0 "' in frames[1] and '"tok1 "' in frames[2]
    assert frames[3].startswith('data: {"error":') and "upstream fake" in frames[3]
    assert frames[4] == "data: [DONE]"
    record = gateway.record_for(request_id)
    assert record["status"] == "error" and record["completion_tokens"] >= 2


def test_mid_stream_failure_with_the_sdk_raises(gateway: Gateway, client: openai.OpenAI) -> None:
    seen = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="midfail", messages=MESSAGES, stream=True):
            seen.append(chunk)
    assert len(seen) == 3  # the role chunk and two content chunks


def test_stall_between_chunks_ends_the_stream_with_an_error_frame(gateway: Gateway) -> None:
    body = {"model": "stallsmid", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth(),
                      timeout=30) as response:
        text = response.read().decode()
    frames = [f for f in text.split("\n\n") if f]
    assert '"role":"assistant"' in frames[0] and '"tok0 "' in frames[1]
    assert frames[-2].startswith('data: {"error":') and "timed out" in frames[-2]
    assert frames[-1] == "data: [DONE]"
