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
from pathlib import Path

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
models:
  flood: {{deployments: [{{backend: solo, model: "m;chunks=4000;chunk_bytes=16384"}}]}}
  solo: {{deployments: [{{backend: solo, model: m}}]}}
  long: {{deployments: [{{backend: solo, model: "m;chunks=2000;delay_ms=50"}}]}}
  slowreply: {{deployments: [{{backend: solo, model: "m;ttft_ms=50000"}}]}}
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


def test_a_stream_cut_at_shutdowns_grace_limit_is_recorded_as_an_error(fake_upstream: str, tmp_path: Path) -> None:
    args, env, url, keys = start_gateway(fake_upstream, tmp_path)
    proc = procs.start(args, env=env, name="shutdown-gateway")
    try:
        procs.wait_http(f"{url}/healthz", proc)
        with httpx.stream("POST", f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {keys['red']}"},
                          json={"model": "long", "messages": MESSAGES, "stream": True}, timeout=60) as response:
            request_id = response.headers["x-request-id"]
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")  # streaming (2000 chunks × 50 ms to go)
            proc.popen.send_signal(signal.SIGTERM)  # the grace limit (10 s) runs out long before the stream
            frames = [line for line in lines if line]
        # The client is told in-band (as for any failure after the first byte), not left with a broken body.
        assert frames[-1] == "data: [DONE]" and '"code":"shutdown"' in frames[-2], frames[-3:]
        assert proc.popen.wait(timeout=60) is not None
    finally:
        procs.stop(proc)
    records = [json.loads(line) for line in proc.output().splitlines()
               if line.startswith("{") and request_id in line]
    assert len(records) == 1, proc.output()[-3000:]
    assert (records[0]["status"], records[0]["error_type"]) == ("error", "shutdown")
    assert "Traceback" not in proc.output(), proc.output()[-3000:]


def test_a_call_still_waiting_at_shutdowns_grace_limit_leaves_an_error_record(fake_upstream: str,
                                                                             tmp_path: Path) -> None:
    args, env, url, keys = start_gateway(fake_upstream, tmp_path)
    proc = procs.start(args, env=env, name="shutdown-plain-gateway")
    outcome: list[object] = []

    def call() -> None:  # the upstream answers after 50 s; shutdown's grace limit is 10 s
        try:
            outcome.append(httpx.post(f"{url}/v1/chat/completions", timeout=60, json={"model": "slowreply", "messages": MESSAGES},
                                      headers={"authorization": f"Bearer {keys['red']}", "x-request-id": "cut-plain"}))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    try:
        procs.wait_http(f"{url}/healthz", proc)
        caller = threading.Thread(target=call)
        caller.start()
        wait_until(lambda: "ttft_ms=50000" in httpx.get(f"{fake_upstream}/_last_request", timeout=5).text,
                   "the call to reach the upstream", 30)
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(timeout=60) is not None
        caller.join(60)
    finally:
        procs.stop(proc)
    records = [json.loads(line) for line in proc.output().splitlines()
               if line.startswith("{") and '"client_request_id":"cut-plain"' in line]
    assert len(records) == 1, proc.output()[-3000:]
    assert (records[0]["status"], records[0]["error_type"]) == ("error", "shutdown")
    assert outcome and not (isinstance(outcome[0], httpx.Response) and outcome[0].status_code == 200)
