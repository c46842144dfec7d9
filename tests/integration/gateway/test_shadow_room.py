"""Shadow calls to a local engine go through the gateway's KV book as client requests do: the call holds
its blocks while it runs (a client request then sees them used, and spills), gives them back whatever
the outcome, and is dropped, counted `no_room`, when the engine has no room for it. A real gateway; the
engine is a small HTTP server in this process that speaks vLLM's /metrics (20 KV blocks of 16 tokens)
and OpenAI chat, and holds the shadow calls' answers (model `slow`) until the test lets them go."""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.integration.gateway.conftest import ADMIN_KEY, UPSTREAM_KEY, Gateway, create_key
from tests.integration.policies.state_server import VLLM_METRICS
from tests.support import procs
from tests.support.procs import wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "what is the capital of France?"}]
BLOCKS = 20  # of 16 tokens: a request with max_tokens 200 holds 14 of them, one with 100 holds 8
LONG, SHORT, HUGE = 200, 100, 400  # HUGE needs more blocks than the whole pool


@dataclass
class Engine:
    """What the fake engine saw, and the gate its `slow` answers wait behind."""

    url: str = ""
    gate: threading.Event = field(default_factory=threading.Event)  # set: `slow` answers at once
    fail: bool = False  # `slow` answers 500
    slow_calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    engine: Engine

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/metrics":
            self._send(200, VLLM_METRICS.format(blocks=BLOCKS, usage=0.0, running=0, waiting=0), "text/plain")
        else:
            self._send(200, "{}", "application/json")

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        model = str(body.get("model", ""))
        if model == "slow":
            with self.engine.lock:
                self.engine.slow_calls += 1
            self.engine.gate.wait(60)
            if self.engine.fail:
                error = {"error": {"message": "engine down", "type": "server_error", "param": None, "code": None}}
                self._send(500, json.dumps(error), "application/json")
                return
        reply = {"id": "chatcmpl-engine", "object": "chat.completion", "created": 0, "model": model,
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                              "finish_reason": "stop"}]}
        self._send(200, json.dumps(reply), "application/json")

    def _send(self, status: int, text: str, kind: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def policy(fake: str, engine: str) -> str:
    return f"""
health: {{failure_threshold: 1000000}}
fairness: {{enabled: false}}
backends:
  hosted: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}}}
  gpu: {{kind: openai, base_url: "{engine}/v1", api_key: k, state: vllm, state_url: "{engine}/metrics",
         kv_bytes_per_token: 1024}}
models:
  m: {{deployments: [{{backend: hosted, model: m}}, {{backend: gpu, model: slow}}]}}
  g: {{deployments: [{{backend: gpu, model: fast}}, {{backend: hosted, model: m}}]}}
rules:
  - {{name: hosted-first, when: {{model: m}}, route: [hosted, gpu]}}
  - {{name: gpu-while-it-fits, when: {{model: g}}, strategy: kv_fit, local: [gpu], spill: [hosted]}}
teams:
  red: {{shadow: {{share: 1.0, backends: [hosted, gpu]}}}}
  blue: {{}}
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    state = Engine()
    handler = type("Handler", (_Handler,), {"engine": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.gate.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def gw(fake_upstream: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("shadow-room")
    data, config = root / "data", root / "policy.yaml"
    config.write_text(policy(fake_upstream, engine.url))
    keys = {team: create_key(data, team, config) for team in ("red", "blue")}
    env = {"HYBRIDGW_DATA_DIR": str(data), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-shadow-room") as (url, proc):
        gateway = Gateway(url, fake_upstream, data, keys, proc, env, config)
        wait_until(lambda: _engine_polled(gateway), "the engine's state polled")
        yield gateway


def _engine_polled(gw: Gateway) -> bool:
    rows = httpx.get(f"{gw.url}/console/api/backends", headers=ADMIN).json()["data"]
    return any(r["name"] == "gpu" and r["engine"] for r in rows)


def counts(gw: Gateway) -> dict[str, int]:
    return httpx.get(f"{gw.url}/admin/shadow/status", headers=ADMIN).json()["counts"]


def chat(gw: Gateway, team: str, model: str, max_tokens: int) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.auth(team), timeout=30,
                      json={"model": model, "messages": MESSAGES, "max_tokens": max_tokens})


def served_by(gw: Gateway, team: str, model: str, max_tokens: int) -> str:
    reply = chat(gw, team, model, max_tokens)
    assert reply.status_code == 200, reply.text
    return reply.headers["x-hybridgw-backend"]


def test_a_shadow_call_holds_its_blocks_while_it_runs(gw: Gateway, engine: Engine) -> None:
    engine.gate.clear()
    before, slow = counts(gw), engine.slow_calls
    assert served_by(gw, "red", "m", LONG) == "hosted"  # the client's answer; its shadow goes to gpu
    wait_until(lambda: engine.slow_calls == slow + 1, "the shadow call at the engine")
    # 14 of the 20 blocks are the shadow's: a client request needing 8 does not fit, and spills
    assert served_by(gw, "blue", "g", SHORT) == "hosted"
    engine.gate.set()
    wait_until(lambda: counts(gw)["ok"] == before["ok"] + 1, "the shadow call answered")
    assert served_by(gw, "blue", "g", SHORT) == "gpu"  # its blocks are back
    assert counts(gw)["no_room"] == before["no_room"]


def test_a_shadow_call_without_room_is_dropped_and_counted(gw: Gateway, engine: Engine) -> None:
    engine.gate.clear()
    before, slow = counts(gw), engine.slow_calls
    first = chat(gw, "red", "m", LONG)
    assert first.status_code == 200 and first.headers["x-hybridgw-backend"] == "hosted"
    wait_until(lambda: engine.slow_calls == slow + 1, "the first shadow call at the engine")
    second = chat(gw, "red", "m", LONG)  # its shadow needs 14 blocks, 6 are left: not sent
    assert second.status_code == 200 and second.headers["x-hybridgw-backend"] == "hosted"
    wait_until(lambda: counts(gw)["no_room"] == before["no_room"] + 1, "the second shadow call dropped")
    assert served_by(gw, "red", "m", HUGE) == "hosted"  # 26 blocks: more than the engine has at all
    wait_until(lambda: counts(gw)["no_room"] == before["no_room"] + 2, "the huge shadow call dropped")
    engine.gate.set()
    wait_until(lambda: counts(gw)["ok"] == before["ok"] + 1, "the first shadow call answered")
    after = counts(gw)
    assert engine.slow_calls == slow + 1 and after["sent"] == before["sent"] + 1
    assert after["sampled"] == before["sampled"] + 3
    # a call not made costs nothing: no usage record of it (the first one's is written)
    assert gw.record_for(first.headers["x-hybridgw-request-id"] + ".shadow")["backend"] == "gpu"
    assert not [r for r in gw.records() if r["request_id"] == second.headers["x-hybridgw-request-id"] + ".shadow"]
    metrics = httpx.get(f"{gw.url}/metrics", headers=ADMIN).text
    found = re.search(r'^hybridgw_shadow_requests_total\{[^}]*outcome="no_room"[^}]*\} (\S+)$', metrics, re.M)
    assert found is not None and float(found.group(1)) == after["no_room"]


def test_a_failed_shadow_call_gives_its_blocks_back(gw: Gateway, engine: Engine) -> None:
    engine.gate.set()
    engine.fail = True
    before = counts(gw)
    try:
        assert served_by(gw, "red", "m", LONG) == "hosted"
        wait_until(lambda: counts(gw)["failed"] == before["failed"] + 1, "the shadow call failed")
    finally:
        engine.fail = False
    # a leaked hold (14 blocks) would leave the next shadow call no room
    assert served_by(gw, "red", "m", LONG) == "hosted"
    wait_until(lambda: counts(gw)["ok"] == before["ok"] + 1, "the next shadow call answered")
    assert counts(gw)["no_room"] == before["no_room"]


def _circuit(url: str, backend: str) -> str:
    rows = httpx.get(f"{url}/console/api/backends", headers=ADMIN).json()["data"]
    return next(r["circuit"] for r in rows if r["name"] == backend)


def test_a_shadow_call_without_room_leaves_a_half_open_circuit_its_probe(fake_upstream: str, engine: Engine,
                                                                         tmp_path: Any) -> None:
    """A half-open backend's one probe is claimed only by a call that is made: a shadow call dropped for want
    of room claimed it first, and the backend read as open to every client until probe_timeout_s."""
    data, config = tmp_path / "data", tmp_path / "policy.yaml"
    health = "health: {failure_threshold: 1, cooldown_s: 0.5, probe_timeout_s: 600}"
    config.write_text(policy(fake_upstream, engine.url).replace("health: {failure_threshold: 1000000}", health))
    key = create_key(data, "red", config)
    env = {"HYBRIDGW_DATA_DIR": str(data), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-shadow-probe") as (url, proc):
        gw = Gateway(url, fake_upstream, data, {"red": key}, proc, env, config)
        wait_until(lambda: _engine_polled(gw), "the engine's state polled")
        engine.gate.set()
        engine.fail = True
        try:
            before = counts(gw)
            assert served_by(gw, "red", "m", LONG) == "hosted"  # its shadow call fails at gpu: the circuit opens
            wait_until(lambda: counts(gw)["failed"] == before["failed"] + 1, "the shadow call failed")
        finally:
            engine.fail = False
        wait_until(lambda: _circuit(url, "gpu") == "half_open", "the cooldown over")
        assert served_by(gw, "red", "m", HUGE) == "hosted"  # its shadow needs more blocks than gpu has at all
        wait_until(lambda: counts(gw)["no_room"] == before["no_room"] + 1, "the huge shadow call dropped")
        assert _circuit(url, "gpu") == "half_open"  # the probe is still there for the next call to take
        assert counts(gw)["sent"] == before["sent"] + 1
