"""A stream's success is recorded once, at its first content chunk (with its TTFT), not already at its
first byte: an upstream that opens every stream with OpenAI's role-only chunk and then fails before
any content is a failing backend, so its circuit opens and the next streams go to the fallback."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.gateway.conftest import create_key
from tests.support import procs


def _policy(fake: str) -> str:
    return f"""
health: {{failure_threshold: 2, cooldown_s: 600}}
backends:
  flaky: {{kind: openai, base_url: "{fake}/v1", api_key: k}}
  backup: {{kind: openai, base_url: "{fake}/v1", api_key: k}}
models:
  m: {{deployments: [{{backend: flaky, model: "m;error_after=0"}}, {{backend: backup, model: m}}]}}
rules:
  - {{name: flaky-first, route: [flaky, backup]}}
teams: {{red: {{}}}}
"""


@pytest.fixture(scope="module")
def served(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("stream-success")
    config = root / "policy.yaml"
    config.write_text(_policy(fake_upstream))
    key = create_key(root / "data", "red", config)
    with procs.gateway(config, {"HYBRIDGW_DATA_DIR": str(root / "data")}, "gateway-stream-success") as (url, _):
        yield url, key


def _stream(url: str, key: str) -> tuple[str, str]:
    """(backend, body) of one streamed chat request."""
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}) as r:
        assert r.status_code == 200
        return r.headers["x-hybridgw-backend"], r.read().decode()


def test_streams_that_fail_after_a_role_chunk_open_the_circuit(served: tuple[str, str]) -> None:
    url, key = served
    seen = []
    for _ in range(8):  # 2 failures in a row open it; the health view may lag a request or two
        backend, body = _stream(url, key)
        seen.append(backend)
        if backend == "backup":
            assert "tok0" in body and "error" not in body
            break
        assert "fake in-band error" in body  # the role chunk came, then the upstream failed
    assert seen[:2] == ["flaky", "flaky"] and seen[-1] == "backup", seen
