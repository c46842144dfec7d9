"""A client that goes away cancels the upstream call: the fake upstream sees the disconnect."""
from __future__ import annotations

import time
import uuid

import httpx

from tests.integration.gateway.conftest import Gateway


def wait_for_tag(gateway: Gateway, tag: str, wait_s: float = 15.0) -> None:
    deadline = time.monotonic() + wait_s
    while tag not in gateway.disconnect_tags():
        assert time.monotonic() < deadline, f"upstream never saw the client of {tag} go away"
        time.sleep(0.05)


def test_disconnect_mid_stream_cancels_upstream(gateway: Gateway) -> None:
    tag = uuid.uuid4().hex
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}], "stream": True, "fake": {"tag": tag}}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth(),
                      timeout=30) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        got = [next(lines) for _ in range(3)]  # a few frames, then hang up (400 chunks × 50 ms remain)
        assert got[0].startswith("data: ")
    wait_for_tag(gateway, tag)
    record = gateway.record_for(request_id)
    assert record["status"] == "aborted"
    assert record["ttft_s"] is not None


def test_disconnect_before_first_byte_cancels_upstream(gateway: Gateway) -> None:
    tag = uuid.uuid4().hex
    body = {"model": "slowfirst", "messages": [{"role": "user", "content": "x"}], "fake": {"tag": tag},
            "stream": False}
    request_id = f"req-{tag}"
    try:
        httpx.post(f"{gateway.url}/v1/chat/completions", json=body,
                   headers={**gateway.auth(), "x-request-id": request_id}, timeout=0.5)
    except httpx.TimeoutException:
        pass
    wait_for_tag(gateway, tag)
    assert gateway.record_for(request_id)["status"] == "aborted"


def test_gateway_still_serves_after_disconnects(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", headers=gateway.auth(), timeout=30,
                          json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200
