"""Real processes for the gateway's integration tests: the fake OpenAI upstream and `hybridgw serve`
on free loopback ports, keys made with `hybridgw keys create`, and the official openai SDK."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support import keys, procs
from tests.support.procs import hybridgw  # noqa: F401  (re-exported to this directory's tests)
from tests.support.redis_server import RedisServer, redis_server_path

ADMIN_KEY = "admin-test-key"
UPSTREAM_KEY = "upstream-secret"


def policy_yaml(fake: str, dead_port: int) -> str:
    """Aliases whose backend model names tell the fake upstream how to behave."""
    return f"""
version: 1
# The fault-injection aliases below all share backend `fake`; the circuit breaker would rightly cool
# it down after a few of them, so it is kept out of these tests (tests/integration/routing covers it).
health: {{failure_threshold: 1000000}}
backends:
  fake:   # `fake` steers the fake upstream per request; the others show allowed extras pass
    {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}, extra_body_fields: [fake, guided_json]}}
  flaky: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}}}
  dead:
    kind: openai
    base_url: "http://127.0.0.1:{dead_port}/v1"
    timeouts: {{connect_s: 2}}
  impatient:
    kind: openai
    base_url: "{fake}/v1"
    timeouts: {{first_byte_s: 0.3, between_chunks_s: 0.3}}
  hosted:
    kind: openai
    base_url: "{fake}/v1"
    requires_env: HYBRIDGW_TEST_UNSET_VARIABLE
models:
  m: {{deployments: [{{backend: fake, model: m}}]}}
  slow: {{deployments: [{{backend: fake, model: "m;chunks=400;delay_ms=50;ttft_ms=0"}}]}}
  slowfirst: {{deployments: [{{backend: fake, model: "m;ttft_ms=30000"}}]}}
  fallback:
    deployments:
      - {{backend: flaky, model: "m;status=503;message=flaky is down"}}
      - {{backend: fake, model: m}}
  down: {{deployments: [{{backend: fake, model: "m;status=500;message=boom inside"}}]}}
  overloaded: {{deployments: [{{backend: fake, model: "m;status=503;message=try later"}}]}}
  limited: {{deployments: [{{backend: fake, model: "m;status=429;message=slow down please"}}]}}
  badreq: {{deployments: [{{backend: fake, model: "m;status=400;message=upstream says no"}}]}}
  midfail: {{deployments: [{{backend: fake, model: "m;chunks=6;fail_after=2"}}]}}
  nousage: {{deployments: [{{backend: fake, model: "m;no_usage=1;chunks=5"}}]}}
  unreachable: {{deployments: [{{backend: dead, model: m}}]}}
  rescued: {{deployments: [{{backend: dead, model: m}}, {{backend: fake, model: m}}]}}
  stalls: {{deployments: [{{backend: impatient, model: "m;ttft_ms=2000"}}]}}
  stallsmid: {{deployments: [{{backend: impatient, model: "m;chunks=4;delay_ms=2000"}}]}}
  secret: {{deployments: [{{backend: fake, model: m}}], teams: [blue]}}
  gone: {{deployments: [{{backend: hosted, model: m}}]}}
teams: {{red: {{}}, blue: {{}}, green: {{}}, purple: {{}}}}
"""



def create_key(data_dir: Path, team: str, config: Path) -> str:
    """A key for `team`, which `config` (the gateway's policy) must name."""
    return keys.create_key(data_dir, team, config)


@dataclass
class Gateway:
    url: str  # http://127.0.0.1:P
    fake: str
    data_dir: Path
    keys: dict[str, str]
    proc: procs.Proc
    env: dict[str, str] = field(default_factory=dict)
    config: Path | None = None  # the policy file it serves

    def client(self, team: str = "red", **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[team], max_retries=0, **kw)

    def async_client(self, team: str = "red", **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.keys[team], max_retries=0, **kw)

    def auth(self, team: str = "red") -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[team]}"}

    def last_upstream_request(self) -> dict[str, Any]:
        return httpx.get(f"{self.fake}/_last_request").json()

    def disconnect_tags(self) -> list[str]:
        return httpx.get(f"{self.fake}/_disconnects").json()["tags"]

    def records(self) -> list[dict[str, Any]]:
        """The gateway's structured access lines (one JSON object per request)."""
        out = []
        # Only whole lines: the gateway may be writing the last one while we read the log.
        for line in self.proc.output().split("\n")[:-1]:
            if line.startswith("{") and '"request_id"' in line:
                out.append(json.loads(line))
        return out

    def record_for(self, request_id: str, wait_s: float = 10.0) -> dict[str, Any]:
        """The one record whose gateway id, or (a test's unique) client x-request-id, is request_id."""
        deadline = time.monotonic() + wait_s
        while True:
            found = [r for r in self.records() if request_id in (r["request_id"], r.get("client_request_id"))]
            if found:
                assert len(found) == 1, f"more than one record for {request_id}"
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage record for {request_id}")
            time.sleep(0.05)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (skipped where none is installed)."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    with RedisServer(workdir=tmp_path) as running:
        yield running


# Package scope: shared by this directory's tests and stopped after its last one, not left running
# (engines and gateways poll while idle) through the rest of the suite.
@pytest.fixture(scope="package")
def fake_upstream() -> Iterator[str]:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    with procs.running(procs.python_module("tests.fakes.openai_upstream", "--port", str(port)),
                       f"{url}/health", name="fake-upstream"):
        yield url


@pytest.fixture(scope="package")
def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    data_dir = root / "data"
    config = root / "policy.yaml"
    config.write_text(policy_yaml(fake_upstream, procs.free_port()))
    keys = {team: create_key(data_dir, team, config) for team in ("red", "blue")}
    env = {"HYBRIDGW_DATA_DIR": str(data_dir), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway") as (url, proc):
        yield Gateway(url, fake_upstream, data_dir, keys, proc, env, config)
        assert proc.alive(), proc.output()[-3000:]


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with gateway.client() as c:
        yield c
