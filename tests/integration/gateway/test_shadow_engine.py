"""Shadow calls to our own engine (`hybridgw serve` spawns it: tiny-random on CPU, a pool of 16 KV blocks
of 16 tokens): a call that fits runs there and is recorded; one larger than the pool is not sent (counted
`no_room`, no record) instead of waiting at the engine; the engine's blocks are free again afterwards."""
from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.gateway.conftest import ADMIN_KEY, UPSTREAM_KEY, Gateway, create_key
from tests.support import procs
from tests.support.procs import wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "hello there"}]
POOL_ARGS = ["--kv-cache-bytes", str(16 * 16 * 512), "--no-prefix-caching"]  # tiny-random: 512 bytes a token


def policy(fake: str) -> str:
    return f"""
health: {{failure_threshold: 1000000}}
fairness: {{enabled: false}}
backends:
  local: {{kind: engine, model: tiny-random, engine_args: {json.dumps(POOL_ARGS)}}}
  hosted: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}}}
models:
  m: {{deployments: [{{backend: hosted, model: m}}, {{backend: local, model: tiny-random}}]}}
  tiny: {{deployments: [{{backend: local, model: tiny-random}}]}}
rules:
  - {{name: hosted-first, when: {{model: m}}, route: [hosted, local]}}
  - {{name: local-only, when: {{model: tiny}}, strategy: kv_fit, local: [local]}}
teams:
  red: {{shadow: {{share: 1.0, backends: [hosted, local]}}}}
  blue: {{}}
"""


@pytest.fixture(scope="module")
def gw(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("shadow-engine")
    data, config = root / "data", root / "policy.yaml"
    config.write_text(policy(fake_upstream))
    keys = {team: create_key(data, team, config) for team in ("red", "blue")}
    env = {"HYBRIDGW_DATA_DIR": str(data), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-shadow-engine", timeout_s=300,
                       extra=["--engine-timeout", "240"]) as (url, proc):
        yield Gateway(url, fake_upstream, data, keys, proc, env, config)


def counts(gw: Gateway) -> dict[str, int]:
    return httpx.get(f"{gw.url}/admin/shadow/status", headers=ADMIN).json()["counts"]


def chat(gw: Gateway, team: str, model: str, max_tokens: int) -> httpx.Response:
    reply = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.auth(team), timeout=60,
                       json={"model": model, "messages": MESSAGES, "max_tokens": max_tokens})
    assert reply.status_code == 200, reply.text
    return reply


def test_shadow_calls_to_the_engine_fit_or_are_dropped(gw: Gateway) -> None:
    chat(gw, "blue", "tiny", 4)  # the engine answers (and its state is polled) before shadowing starts
    before = counts(gw)
    small = chat(gw, "red", "m", 8)
    assert small.headers["x-hybridgw-backend"] == "hosted"
    wait_until(lambda: counts(gw)["ok"] == before["ok"] + 1, "the small shadow call answered by the engine")
    record = gw.record_for(small.headers["x-hybridgw-request-id"] + ".shadow")
    assert (record["backend"], record["status"], record["rule"]) == ("local", "ok", "shadow")
    huge = chat(gw, "red", "m", 400)  # 400 output tokens need 25 blocks; the whole pool has 16
    assert huge.headers["x-hybridgw-backend"] == "hosted"
    wait_until(lambda: counts(gw).get("no_room", 0) == before.get("no_room", 0) + 1, "the huge shadow call dropped")
    after = counts(gw)
    assert (after["sent"], after["failed"]) == (before["sent"] + 1, before["failed"])
    assert not [r for r in gw.records() if r["request_id"] == huge.headers["x-hybridgw-request-id"] + ".shadow"]
    # nothing is left held: a request that needs most of the pool still runs on the engine
    assert chat(gw, "blue", "tiny", 200).headers["x-hybridgw-backend"] == "local"


def test_a_request_our_engine_would_refuse_is_not_shadowed_to_it(gw: Gateway) -> None:
    """JSON output or a tool call: the engine would answer its 400 — a call spent on a pair with nothing to
    compare. Counted as skipped, nothing sent, no shadow record."""
    chat(gw, "blue", "tiny", 4)
    before = counts(gw)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    ids = []
    for extra in ({"response_format": {"type": "json_object"}}, {"tools": tools}, {"tools": tools, "tool_choice": "required"}):
        reply = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.auth("red"), timeout=60,
                           json={"model": "m", "messages": MESSAGES, "max_tokens": 4, **extra})
        assert reply.status_code == 200 and reply.headers["x-hybridgw-backend"] == "hosted", reply.text
        ids.append(reply.headers["x-hybridgw-request-id"])
    text = chat(gw, "red", "m", 4)  # a plain one still is: it shows the three were looked at and passed over
    wait_until(lambda: counts(gw)["ok"] == before["ok"] + 1, "the plain request's shadow call answered")
    after = counts(gw)
    assert after["skipped"] == before.get("skipped", 0) + 3 and after["sent"] == before["sent"] + 1, after
    assert gw.record_for(text.headers["x-hybridgw-request-id"] + ".shadow")["backend"] == "local"  # waits for it
    shadows = {r["request_id"] for r in gw.records()}
    assert not [i for i in ids if i + ".shadow" in shadows]
