"""Token counting never stalls the gateway or runs for nothing (a real `hybridgw serve`): a 4 MiB
prompt is counted off the event loop, so a small request sent after it is answered first; and a
team over its requests-per-minute limit is refused before its prompt is counted."""
from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.integration.gateway.conftest import create_key
from tests.support import procs
from tests.support.clock import minute_with_room
from tests.support.procs import wait_until

BIG_PROMPT = "hello world " * ((4 * 1024 * 1024 - 1024) // 12)  # under the 4 MiB limit; ~0.5 s to count
RPM = 2


@dataclass
class Served:
    url: str
    port: int
    keys: dict[str, str]
    proc: procs.Proc

    def record(self, request_id: str) -> dict[str, object]:
        def found() -> dict[str, object] | None:
            for line in self.proc.output().split("\n")[:-1]:  # whole lines only
                if line.startswith("{") and f'"client_request_id":"{request_id}"' in line:
                    return dict(json.loads(line))
            return None

        return dict(wait_until(found, f"the access record of {request_id}"))


def _policy(fake: str) -> str:
    return f"""
version: 1
backends:
  fake: {{kind: openai, base_url: "{fake}/v1", api_key: k}}
models:
  m: {{deployments: [{{backend: fake, model: m}}]}}
teams:
  free: {{}}
  tpm: {{limits: {{tokens_per_minute: 100000}}}}
  rpm: {{limits: {{requests_per_minute: {RPM}}}}}
"""


@pytest.fixture(scope="module")
def served(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("counting")
    config = root / "policy.yaml"
    config.write_text(_policy(fake_upstream))
    keys = {team: create_key(root / "data", team, config) for team in ("free", "tpm", "rpm")}
    port = procs.free_port()
    with procs.gateway(config, {"HYBRIDGW_DATA_DIR": str(root / "data")}, "gateway-counting", port=port) as (url, proc):
        yield Served(url, port, keys, proc)


def _chat_body(content: str) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()


def _raw_post(port: int, key: str, body: bytes, request_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
                 + b"\r\nX-Request-Id: " + request_id.encode() + b"\r\nContent-Type: application/json\r\n"
                 + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return sock


def _status(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "the gateway closed the connection without answering"
        head += chunk
    return head.split(b"\r\n", 1)[0]


def test_a_small_request_is_not_held_up_by_counting_a_huge_prompt(served: Served) -> None:
    # The big prompt goes over team tpm's tokens-per-minute limit, so its answer (429) is written the
    # moment its count is done. Counted on the event loop, that moment came before the small request
    # (sent after it, needing an upstream round trip) could even be read.
    big = _raw_post(served.port, served.keys["tpm"], _chat_body(BIG_PROMPT), "big-prompt")
    try:
        small = httpx.post(f"{served.url}/v1/chat/completions", content=_chat_body("hi"), timeout=60,
                           headers={"authorization": f"Bearer {served.keys['free']}",
                                    "content-type": "application/json"})
        assert small.status_code == 200
        big.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing from the big one yet
            big.recv(1)
        big.setblocking(True)
        assert _status(big) == b"HTTP/1.1 429 Too Many Requests"
    finally:
        big.close()
    assert served.record("big-prompt")["estimated_prompt_tokens"] > 600_000  # it was counted, in full


def test_a_team_over_its_rpm_is_refused_before_its_prompt_is_counted(served: Served) -> None:
    minute = minute_with_room(6.0)  # all of them inside one minute window (0.3 s at a load of 10)
    with httpx.Client(base_url=served.url, timeout=60,
                      headers={"authorization": f"Bearer {served.keys['rpm']}"}) as http:
        for _ in range(RPM):
            assert http.post("/v1/chat/completions", content=_chat_body("hi")).status_code == 200
        refused = http.post("/v1/chat/completions", content=_chat_body(BIG_PROMPT),
                            headers={"x-request-id": "over-rpm"})
    assert time.time() // 60 == minute, "the requests crossed a minute boundary; their window split in two"
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "requests_per_minute"
    record = served.record("over-rpm")
    assert record["status"] == "rejected" and record["estimated_prompt_tokens"] == 0
