"""Requests that end without their client's say-so: a client that stops reading is dropped after the
write timeout (the upstream connection released), and a stream or a non-streamed call cut by
shutdown's grace limit is recorded as an error, not `ok` (or not at all)."""
from __future__ import annotations

import json
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.gateway.conftest import ADMIN_KEY, Gateway, create_key, hybridgw
from tests.support import procs
from tests.support.procs import wait_until

MESSAGES = [{"role": "user", "content": "x"}]
WRITE_TIMEOUT_S = 2


def policy(fake: str) -> str:
    return f"""
version: 1
backends:
  solo: {{kind: openai, base_url: "{fake}/v1", extra_body_fields: [fake], max_connections: 1}}
  spare: {{kind: openai, base_url: "{fake}/v1"}}
models:
  flood: {{deployments: [{{backend: solo, model: "m;chunks=4000;chunk_bytes=16384"}}]}}
  solo: {{deployments: [{{backend: solo, model: m}}]}}
  long: {{deployments: [{{backend: solo, model: "m;chunks=2000;delay_ms=50"}}]}}
  slowreply: {{deployments: [{{backend: spare, model: "m;ttft_ms=50000"}}]}}  # not behind solo's one connection
teams: {{red: {{}}}}
"""


def start_gateway(fake: str, root: Path) -> tuple[list[str], dict[str, str], str, dict[str, str]]:
    data_dir, config = root / "data", root / "policy.yaml"
    config.write_text(policy(fake))
    keys = {"red": create_key(data_dir, "red", config)}
    port = procs.free_port()
    env = {"HYBRIDGW_DATA_DIR": str(data_dir), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY,
           "HYBRIDGW_STREAM_WRITE_TIMEOUT_S": str(WRITE_TIMEOUT_S)}
    return hybridgw("serve", "--config", str(config), "--port", str(port)), env, f"http://127.0.0.1:{port}", keys


@pytest.fixture
def cut_gateway(fake_upstream: str, tmp_path: Path) -> Iterator[Gateway]:
    args, env, url, keys = start_gateway(fake_upstream, tmp_path)
    with procs.running(args, f"{url}/healthz", env=env, name="cut-gateway") as proc:
        yield Gateway(url, fake_upstream, tmp_path / "data", keys, proc, env)
        assert "Traceback" not in proc.output(), proc.output()[-5000:]


def test_a_client_that_stops_reading_is_dropped_and_the_upstream_connection_released(cut_gateway: Gateway) -> None:
    tag, request_id = uuid.uuid4().hex, f"stall-{uuid.uuid4().hex}"
    body = json.dumps({"model": "flood", "messages": MESSAGES, "stream": True, "fake": {"tag": tag}}).encode()
    host, port = cut_gateway.url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the gateway's sends block soon
    try:
        sock.connect((host, int(port)))
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                f"authorization: Bearer {cut_gateway.keys['red']}\r\nx-request-id: {request_id}\r\n"
                f"content-length: {len(body)}\r\n\r\n")
        sock.sendall(head.encode() + body)
        # ... and never read. 4000 chunks of 16 KiB are far more than any socket buffers hold.
        record = cut_gateway.record_for(request_id, wait_s=60)
        assert (record["status"], record["error_type"]) == ("aborted", "client_stalled")
        wait_until(lambda: tag in cut_gateway.disconnect_tags(), "the upstream to see its stream closed", 30)
        # The backend's only connection is free again: another team's request is served at once.
        served = httpx.post(f"{cut_gateway.url}/v1/chat/completions", headers=cut_gateway.auth(), timeout=30,
                            json={"model": "solo", "messages": MESSAGES})
        assert served.status_code == 200 and served.json()["choices"][0]["message"]["content"]
    finally:
        sock.close()


@dataclass
class Shutdown:
    """What one SIGTERM left once shutdown's grace limit ran out: a stream's frames, a waiting call's outcome."""

    frames: list[str]  # the stream's non-empty lines, first to last
    stream_id: str  # its x-request-id
    outcome: list[object]  # the waiting call's response or error
    log: str  # the gateway's whole output, after it exited

    def records(self, text: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.split("\n")[:-1] if line.startswith("{") and text in line]

    def tracebacks(self) -> list[str]:
        """Each traceback in the log, from its first frame to its exception line."""
        out = []
        for block in self.log.split("Traceback (most recent call last):\n")[1:]:
            lines = block.split("\n")
            end = next((i for i, line in enumerate(lines) if line and not line.startswith(" ")), len(lines))
            out.append("\n".join(lines[:end + 1]))
        return out


@pytest.fixture(scope="module")
def shutdown(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Shutdown:
    """One gateway SIGTERMed while a stream runs (2000 chunks × 50 ms to go) and a call waits for an
    upstream that answers after 50 s: the grace limit (10 s) cuts both, so both tests wait for it once."""
    args, env, url, keys = start_gateway(fake_upstream, tmp_path_factory.mktemp("shutdown"))
    proc = procs.start(args, env=env, name="shutdown-gateway")
    headers = {"authorization": f"Bearer {keys['red']}"}
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(httpx.post(f"{url}/v1/chat/completions", timeout=60, headers={
                **headers, "x-request-id": "cut-plain"}, json={"model": "slowreply", "messages": MESSAGES}))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    try:
        procs.wait_http(f"{url}/healthz", proc)
        with httpx.stream("POST", f"{url}/v1/chat/completions", headers=headers, timeout=60,
                          json={"model": "long", "messages": MESSAGES, "stream": True}) as response:
            stream_id, lines = response.headers["x-request-id"], response.iter_lines()
            frames = [next(lines)]
            caller.start()
            wait_until(lambda: "ttft_ms=50000" in httpx.get(f"{fake_upstream}/_last_request", timeout=5).text,
                       "the waiting call to reach the upstream", 30)
            proc.popen.send_signal(signal.SIGTERM)
            frames += [line for line in lines if line]
        proc.popen.wait(timeout=60)
        caller.join(60)
    finally:
        procs.stop(proc)
    return Shutdown(frames, stream_id, outcome, proc.output())


def test_a_stream_cut_at_shutdowns_grace_limit_is_recorded_as_an_error(shutdown: Shutdown) -> None:
    frames = shutdown.frames
    assert frames[0].startswith("data: ") and len(frames) > 2  # it was streaming when SIGTERM came
    # The client is told in-band (as for any failure after the first byte), not left with a broken body.
    assert frames[-1] == "data: [DONE]" and '"code":"shutdown"' in frames[-2], frames[-3:]
    records = shutdown.records(shutdown.stream_id)
    assert len(records) == 1, shutdown.log[-3000:]
    assert (records[0]["status"], records[0]["error_type"]) == ("error", "shutdown")
    # No traceback, not even for the waiting call, whose cancellation the gateway re-raises once its record
    # is written (gateway/proxy.py: handle): uvicorn logged it with every frame down to aiohttp; now one line.
    assert shutdown.tracebacks() == [], shutdown.tracebacks()
    cancelled = [line for line in shutdown.log.split("\n") if "still running at shutdown's grace limit" in line]
    assert len(cancelled) == 1 and "error_type=shutdown" in cancelled[0], shutdown.log[-3000:]


def test_a_call_still_waiting_at_shutdowns_grace_limit_leaves_an_error_record(shutdown: Shutdown) -> None:
    records = shutdown.records('"client_request_id":"cut-plain"')
    assert len(records) == 1, shutdown.log[-3000:]
    assert (records[0]["status"], records[0]["error_type"]) == ("error", "shutdown")
    outcome = shutdown.outcome
    assert outcome and not (isinstance(outcome[0], httpx.Response) and outcome[0].status_code == 200)
