"""A client request (or a shadow call) that claims a half-open circuit's one probe gives it back when its call
is not made (the team's limits refuse it) or tells the backend's health nothing (the upstream's 400 is the
request's fault; the client left before the result): kept, the backend read as open to every client until
probe_timeout_s (here 600 s)."""
from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.integration.gateway.conftest import ADMIN_KEY, UPSTREAM_KEY, Gateway, create_key
from tests.support import procs
from tests.support.procs import wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def policy(fake: str) -> str:
    return f"""
version: 1
health: {{failure_threshold: 1, cooldown_s: 0.5, max_cooldown_s: 0.5, probe_timeout_s: 600}}
backends:
  up: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}, price: {{input_usd_per_mtok: 1, output_usd_per_mtok: 1}}}}
  fussy: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}, extra_body_fields: [fake]}}
models:
  m: {{deployments: [{{backend: up, model: m}}]}}
  pair: {{deployments: [{{backend: up, model: m}}, {{backend: fussy, model: m}}]}}
teams:
  red: {{}}
  tight: {{limits: {{tokens_per_minute: 1}}}}
  thrifty: {{budget: {{usd_per_day: 0.0, on_exceed: route}}}}
  lime: {{shadow: {{share: 1.0, backends: [up, fussy]}}}}
"""


@pytest.fixture(scope="module")
def gw(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("probe")
    data, config = root / "data", root / "policy.yaml"
    config.write_text(policy(fake_upstream))
    keys = {team: create_key(data, team, config) for team in ("red", "tight", "thrifty", "lime")}
    env = {"HYBRIDGW_DATA_DIR": str(data), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-probe") as (url, proc):
        yield Gateway(url, fake_upstream, data, keys, proc, env, config)


def _circuit(gw: Gateway, backend: str = "up") -> str:
    rows = httpx.get(f"{gw.url}/console/api/backends", headers=ADMIN).json()["data"]
    return next(r["circuit"] for r in rows if r["name"] == backend)


def _chat(gw: Gateway, team: str, user: str | None = None, **fields: Any) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **fields}
    if user is not None:
        body["user"] = user  # the fake upstream's knobs, in a field every backend is sent
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=gw.auth(team), timeout=30).status_code


def _shadow_failed(gw: Gateway) -> int:
    return httpx.get(f"{gw.url}/admin/shadow/status", headers=ADMIN).json()["counts"].get("failed", 0)


def _half_open(gw: Gateway) -> None:
    """A 500 opens the circuit (closed: threshold 1; half-open: the failed probe), then its cooldown ends."""
    assert _chat(gw, "red", "fake:status=500") == 502
    wait_until(lambda: _circuit(gw) == "half_open", "the cooldown over")


def test_a_request_the_limits_refuse_gives_the_probe_back(gw: Gateway) -> None:
    _half_open(gw)
    assert _chat(gw, "tight") == 429  # routed (the probe claimed), then over the team's tokens a minute
    assert _circuit(gw) == "half_open"  # the next request may probe
    assert _chat(gw, "red") == 200 and _circuit(gw) == "closed"


def test_a_request_routed_again_over_budget_probes_itself(gw: Gateway) -> None:
    _half_open(gw)
    # Over its budget (on_exceed: route), it is routed again: the first plan's probe kept, the backend read as
    # open to the second plan too, and the request was refused 503 for want of a healthy backend.
    assert _chat(gw, "thrifty") == 200
    assert _circuit(gw) == "closed"


def test_a_probe_answered_400_gives_it_back(gw: Gateway) -> None:
    _half_open(gw)
    assert _chat(gw, "red", "fake:status=400") == 400  # the request's fault: no news of the backend's health
    assert _circuit(gw) == "half_open"
    assert _chat(gw, "red") == 200 and _circuit(gw) == "closed"


def test_a_shadow_probe_answered_400_gives_it_back(gw: Gateway) -> None:
    """`fake` reaches only fussy (its extra_body_fields): the client's call to up is served; the shadow's fails."""
    assert _chat(gw, "lime", model="pair", fake={"status": 500}) == 200
    wait_until(lambda: _shadow_failed(gw) == 1 and _circuit(gw, "fussy") == "half_open", "fussy opened, cooled")
    assert _chat(gw, "lime", model="pair", fake={"status": 400}) == 200  # its shadow call claims the probe
    wait_until(lambda: _shadow_failed(gw) == 2, "the shadow's 400")
    assert _circuit(gw, "fussy") == "half_open"


def _hang_up_mid_call(gw: Gateway, *, stream: bool, fake: str) -> str:
    """A request whose upstream call is under way when its client hangs up; its request id once the upstream has
    seen it go (the gateway cancelled the call)."""
    tag = uuid.uuid4().hex
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                         "stream": stream, "user": f"fake:{fake};tag={tag}"})
    url = urlsplit(gw.url)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {url.netloc}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {gw.keys['red']}\r\nx-request-id: {tag}\r\ncontent-length: {len(body)}\r\n\r\n")
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode() + body)
        if stream:  # the role chunk relayed, no content yet
            received = b""
            while b"data: " not in received:
                received += sock.recv(65536)
        else:
            wait_until(lambda: tag in str(gw.last_upstream_request().get("body", {}).get("user")), "the upstream call")
    wait_until(lambda: tag in gw.disconnect_tags(), "the upstream call cancelled")
    return tag


@pytest.mark.parametrize(("stream", "fake"), [(False, "ttft_ms=600000"), (True, "role_delay_ms=600000")],
                         ids=["before-the-answer", "stream-before-content"])
def test_a_probe_whose_client_hangs_up_gives_it_back(gw: Gateway, stream: bool, fake: str) -> None:
    _half_open(gw)
    request_id = _hang_up_mid_call(gw, stream=stream, fake=fake)
    assert gw.record_for(request_id)["status"] == "aborted"  # written after the probe's fate was settled
    assert _circuit(gw) == "half_open"  # no news of the backend: the next request may probe
    assert _chat(gw, "red") == 200 and _circuit(gw) == "closed"
