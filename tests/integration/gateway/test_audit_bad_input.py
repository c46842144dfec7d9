"""Audit probes a hostile client or a broken upstream found to end in a 500 (a traceback in the log): deeply
nested bodies, an image part whose `detail` is not a name, an upstream 200 whose `choices` is no list, and
an upstream that echoes the gateway's own provider key in its error. Each now gets an OpenAI-shaped answer
that is no 500, and leaves its usage record."""
from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.gateway.conftest import UPSTREAM_KEY, Gateway

MESSAGES = [{"role": "user", "content": "hi"}]


def nested(depth: int) -> str:
    """A stand-in for `depth` nested arrays, written out by `encode` (Python's json cannot hold 1,000 levels)."""
    return f"__nested_{depth}__"


def encode(body: dict[str, Any]) -> bytes:
    return re.sub(rb'"__nested_(\d+)__"', lambda m: b"[" * int(m[1]) + b"]" * int(m[1]), json.dumps(body).encode())


def post(gateway: Gateway, body: dict[str, Any], path: str = "/v1/chat/completions") -> httpx.Response:
    headers = {**gateway.auth(), "content-type": "application/json", "x-request-id": f"audit-{uuid.uuid4().hex}"}
    return httpx.post(f"{gateway.url}{path}", content=encode(body), headers=headers, timeout=30)


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("path, body", [
    # the prompt counter recursed into the extra field (RecursionError)
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x", "x": nested(700)}]}),
    # orjson reads 1,024 levels but writes 254: the upstream call failed to encode the body
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "response_format": {"a": nested(300)}}),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "tools": [{"a": nested(1000)}]}),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "stream": True, "response_format": nested(300)}),
    ("/v1/completions", {"model": "m", "prompt": "x", "stop": nested(300)}),
    ("/v1/embeddings", {"model": "m", "input": "x", "user": nested(300)}),
])
def test_a_deeply_nested_body_is_a_400(gateway: Gateway, path: str, body: dict[str, Any]) -> None:
    error = assert_openai_error(post(gateway, body, path), 400)
    assert error["type"] == "invalid_request_error" and "nested" in error["message"]


def test_a_body_nested_within_the_bound_is_served(gateway: Gateway) -> None:
    body = {"model": "m", "messages": MESSAGES, "response_format": {"type": "json_schema", "a": nested(100)}}
    response = post(gateway, body)
    assert response.status_code == 200, response.text[:500]
    assert json.dumps(gateway.last_upstream_request()["body"]["response_format"]["a"]) == "[" * 100 + "]" * 100


@pytest.mark.parametrize("detail", [[1], {"a": 1}])
def test_an_image_detail_that_is_not_a_name_is_counted_not_a_500(gateway: Gateway, detail: Any) -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": detail}}
    response = post(gateway, {"model": "m", "messages": [{"role": "user", "content": [part]}]})
    assert response.status_code == 200, response.text[:500]
    record = gateway.record_for(response.headers["x-hybridgw-request-id"])
    assert record["status"] == "ok" and record["estimated_prompt_tokens"] > 0


@pytest.mark.parametrize("raw", [
    '{"choices":5}',
    '{"choices":true,"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
    '{"choices":[{"message":{"content":"x","tool_calls":5},"finish_reason":"stop"}]}',
])
def test_an_upstream_body_whose_choices_are_malformed_is_no_500(gateway: Gateway, raw: str) -> None:
    response = post(gateway, {"model": "m", "messages": MESSAGES, "fake": {"raw_body": raw}})
    assert response.status_code != 500, response.text[:500]
    record = gateway.record_for(response.headers["x-hybridgw-request-id"])
    assert record["http_status"] == response.status_code


@pytest.mark.parametrize("frame", ['{"choices":5}', '{"choices":[{"delta":{"tool_calls":5}}]}'])
def test_a_streamed_chunk_whose_choices_are_malformed_ends_cleanly(gateway: Gateway, frame: str) -> None:
    body = {"model": "nousage", "messages": MESSAGES, "stream": True, "fake": {"raw_frame": frame}}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth(),
                      timeout=30) as response:
        text = response.read().decode()
        request_id = response.headers["x-hybridgw-request-id"]
    assert response.status_code == 200
    assert text.endswith("data: [DONE]\n\n") and "tok3" in text, text[-500:]
    record = gateway.record_for(request_id)
    assert record["status"] == "ok" and record["completion_tokens"] > 0


def test_an_empty_streamed_frame_is_dropped(gateway: Gateway) -> None:
    """`data: {}` (no choices, no usage, no error) was relayed to the client as a chunk of its own."""
    body = {"model": "m", "messages": MESSAGES, "stream": True, "fake": {"raw_frame": "{}"}}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth(),
                      timeout=30) as response:
        text = response.read().decode()
        request_id = response.headers["x-hybridgw-request-id"]
    assert response.status_code == 200
    events = [e for e in text.split("\n\n") if e]
    assert "data: {}" not in events and events[-1] == "data: [DONE]" and "tok3" in text, text[-500:]
    assert gateway.record_for(request_id)["status"] == "ok"


def test_a_stream_of_only_empty_frames_is_a_502(gateway: Gateway) -> None:
    """A stream that carries nothing but `data: {}` is no answer, as a non-streamed `{}` is not."""
    response = post(gateway, {"model": "m", "messages": MESSAGES, "stream": True, "fake": {"only_empty": 1}})
    error = assert_openai_error(response, 502)
    assert error["type"] == "upstream_error" and error["code"] == "upstream_protocol"
    record = gateway.record_for(response.headers["x-hybridgw-request-id"])
    assert record["status"] == "error" and record["http_status"] == 502


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_echoes_the_provider_key_does_not_show_it(gateway: Gateway, stream: bool) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": stream, "fake": {"status": 401, "echo_key": 1}}
    response = post(gateway, body)
    assert_openai_error(response, 502)
    assert UPSTREAM_KEY not in response.text and "[redacted]" in response.text
    record = gateway.record_for(response.headers["x-hybridgw-request-id"])
    assert UPSTREAM_KEY not in json.dumps(record)
    readyz = httpx.get(f"{gateway.url}/readyz", headers={"authorization": "Bearer admin-test-key"}, timeout=30)
    assert UPSTREAM_KEY not in readyz.text


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_redirect_is_not_followed(gateway: Gateway, stream: bool) -> None:
    """A 307 would have the prompt (and our key, on the same origin) re-POSTed wherever the upstream
    points: only the address the policy names is called, and the client sees a 502."""
    body = {"model": "m", "messages": MESSAGES, "stream": stream, "fake": {"redirect": "/elsewhere"}}
    response = post(gateway, body)
    error = assert_openai_error(response, 502)
    assert "redirect" in error["message"]
    assert gateway.last_upstream_request()["path"] == "/v1/chat/completions"  # never /elsewhere
    record = gateway.record_for(response.headers["x-hybridgw-request-id"])
    assert record["http_status"] == 502


def _health(gateway: Gateway, backend: str) -> dict[str, Any]:
    rows = httpx.get(f"{gateway.url}/console/api/backends", headers={"authorization": "Bearer admin-test-key"},
                     timeout=30).json()["data"]
    return next(row for row in rows if row["name"] == backend)


@pytest.mark.parametrize("path, body, raw", [
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES}, "{}"),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES}, "[]"),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES}, '{"object":"chat.completion","choices":[]}'),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES}, '{"choices":[5]}'),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES}, "<html><body>502 Bad Gateway</body></html>"),
    ("/v1/completions", {"model": "m", "prompt": "x"}, '{"usage":{"prompt_tokens":1,"completion_tokens":1}}'),
    ("/v1/embeddings", {"model": "m", "input": "x"}, '{"object":"list"}'),
])
def test_an_upstream_200_that_is_no_answer_is_a_502_and_a_failure(gateway: Gateway, path: str,
                                                                 body: dict[str, Any], raw: str) -> None:
    """Was relayed as a 200 (`{}` reached the SDK as an empty completion) and recorded as a success."""
    response = post(gateway, {**body, "fake": {"raw_body": raw}}, path)
    error = assert_openai_error(response, 502)
    assert error["type"] == "upstream_error" and error["code"] == "upstream_protocol"
    record = gateway.record_for(response.headers["x-hybridgw-request-id"])
    assert record["status"] == "error" and record["http_status"] == 502
    assert _health(gateway, "fake")["consecutive_failures"] >= 1  # the backend's health was told
    assert post(gateway, {"model": "m", "messages": MESSAGES}).status_code == 200
    assert _health(gateway, "fake")["consecutive_failures"] == 0
