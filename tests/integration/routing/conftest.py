"""Real processes for the routing end-to-end tests: the fake hosted upstream, and `hybridgw serve`
(which spawns its `kind: engine` backends) on free loopback ports, driven by the official openai SDK."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support import keys, procs
from tests.support.policy_text import engine_and_hosted
from tests.support.procs import hybridgw, wait_until  # noqa: F401  (re-exported to this directory's tests)

MESSAGES = [{"role": "user", "content": "hello there"}]
CLIENT_TIMEOUT_S = 30.0  # every call is bounded: a hang fails the test instead of stalling the suite





@dataclass(frozen=True)
class Routed:
    """One answered request as the client saw it."""

    status: int
    backend: str | None  # x-hybridgw-backend
    rule: str | None  # x-hybridgw-route-rule
    request_id: str | None
    retry_after: str | None
    body: Any  # the parsed completion, or the error body

    @property
    def model(self) -> str | None:
        return getattr(self.body, "model", None)


@dataclass
class Fake:
    url: str  # http://127.0.0.1:P

    def requests(self) -> int:
        """Requests the fake has received so far (every path but its own inspection ones)."""
        return int(httpx.get(f"{self.url}/_disconnects", timeout=5).json()["requests"])

    def last_request(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_last_request", timeout=5).json()


@dataclass
class Gateway:
    url: str
    key: str
    proc: procs.Proc
    config: Path | None
    data_dir: Path

    def client(self, timeout: float = CLIENT_TIMEOUT_S) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.key, max_retries=0, timeout=timeout)

    def async_client(self, timeout: float = CLIENT_TIMEOUT_S) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.key, max_retries=0, timeout=timeout)

    def chat(self, model: str, max_tokens: int = 4, **kw: Any) -> Routed:
        """One non-streamed chat request; errors come back as a Routed with their status."""
        with self.client() as client:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=model, messages=kw.pop("messages", MESSAGES), max_tokens=max_tokens, **kw)
            except openai.APIStatusError as exc:
                return _routed(exc.status_code, exc.response.headers, exc.body)
            return _routed(raw.status_code, raw.headers, raw.parse())

    async def achat(self, client: openai.AsyncOpenAI, model: str, max_tokens: int, **kw: Any) -> Routed:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=kw.pop("messages", MESSAGES), max_tokens=max_tokens, **kw)
        except openai.APIStatusError as exc:
            return _routed(exc.status_code, exc.response.headers, exc.body)
        return _routed(raw.status_code, raw.headers, raw.parse())

    def log(self) -> str:
        return self.proc.output()

    def records(self) -> list[dict[str, Any]]:
        """The gateway's JSON access lines, one per request."""
        return [json.loads(line) for line in self.log().splitlines()
                if line.startswith("{") and '"request_id"' in line]

    def record_for(self, request_id: str | None) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((r for r in self.records() if r["request_id"] == request_id), None)

        return wait_until(found, f"access record of {request_id}", 10)

    def engine_pids(self, name: str = "local") -> list[int]:
        return [int(p) for p in re.findall(rf"engine {name}: started pid (\d+)", self.log())]


def _routed(status: int, headers: Mapping[str, str], body: Any) -> Routed:
    return Routed(status, headers.get("x-hybridgw-backend"), headers.get("x-hybridgw-route-rule"),
                  headers.get("x-request-id"), headers.get("retry-after"), body)


def create_key(data_dir: Path, team: str = "red", config: Path | None = None, redis_url: str = "") -> str:
    return keys.create_key(data_dir, team, config, redis_url)


@contextmanager
def serving(root: Path, policy: str | None, env: Mapping[str, str] | None = None,
            unset: tuple[str, ...] = ()) -> Iterator[Gateway]:
    """`hybridgw serve` on a free port: `--config root/policy.yaml` with `policy`, or the embedded
    default policy when `policy` is None. `unset` names variables removed from its environment."""
    data_dir = root / "data"
    config = None
    if policy is not None:
        config = root / "policy.yaml"
        config.write_text(policy)
    # The embedded default policy names one team, `default`; the test policies name `red`.
    full_env = {"HYBRIDGW_DATA_DIR": str(data_dir), **(env or {})}
    redis_url = full_env.get("REDIS_URL", "" if "REDIS_URL" in unset else os.environ.get("REDIS_URL", ""))
    key = create_key(data_dir, "red" if config is not None else "default", config, redis_url)
    with procs.served(config, full_env, timeout_s=300, name="routing-gw", extra=["--engine-timeout", "240"],
                      unset=(*unset, "HYBRIDGW_POLICY")) as served:
        yield Gateway(served.url, key, served.proc, config, data_dir)
        assert served.proc.alive(), served.log()[-3000:]


# Package scope: shared by this directory's tests and stopped after its last one, not left running
# (engines and gateways poll while idle) through the rest of the suite.
@pytest.fixture(scope="package")
def fake() -> Iterator[Fake]:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    with procs.running(procs.python_module("tests.fakes.openai_upstream", "--port", str(port)),
                       f"{url}/health", name="routing-fake"):
        yield Fake(url)


# 16 KV blocks of 16 tokens (tiny-random keeps 512 bytes per token): a request with ~100 output
# tokens needs 9 of them, so two of those never fit at once and one of 400 never fits at all.
SMALL_POOL_BLOCKS = 16
SMALL_POOL_ARGS = ["--kv-cache-bytes", str(SMALL_POOL_BLOCKS * 16 * 512), "--no-prefix-caching"]


def hybrid_policy(fake: str) -> str:
    """A tiny local engine and the fake as hosted, under one backend name per test so that one
    backend's circuit breaker never changes another test's routing."""
    return f"""
version: 1
# Cooldowns long enough for a loaded CI box; a failed probe re-opens for as long again (the cap: the
# doubling is tests/unit/policies/test_health.py's, and a second wait of 16 s added nothing here).
health: {{failure_threshold: 3, cooldown_s: 8, max_cooldown_s: 8}}
backends:
  local:
    kind: engine
    model: tiny-random
    engine_args: {json.dumps(SMALL_POOL_ARGS)}
  hosted: {{kind: openai, base_url: "{fake}/v1", api_key: upstream-key}}
  flaky: {{kind: openai, base_url: "{fake}/v1", api_key: upstream-key}}
  shaky: {{kind: openai, base_url: "{fake}/v1", api_key: upstream-key}}
  limited: {{kind: openai, base_url: "{fake}/v1", api_key: upstream-key}}
  slowpoke:
    kind: openai
    base_url: "{fake}/v1"
    api_key: upstream-key
    timeouts: {{first_byte_s: 0.5}}
models:
  chat:
    deployments:
      - {{backend: local, model: tiny-random}}
      - {{backend: hosted, model: m}}
  fallback:
    deployments:
      - {{backend: flaky, model: "m;status=503;message=hosted is overloaded"}}
      - {{backend: local, model: tiny-random}}
  shaky:
    deployments:
      - {{backend: shaky, model: m}}
      - {{backend: local, model: tiny-random}}
  limited:
    deployments:
      - {{backend: limited, model: "m;status=429;message=rate limited upstream"}}
      - {{backend: local, model: tiny-random}}
  slowfirst:
    deployments:
      - {{backend: slowpoke, model: "m;ttft_ms=5000"}}
      - {{backend: local, model: tiny-random}}
  tiny:
    deployments: [{{backend: local, model: tiny-random}}]
rules:
  - name: local-while-it-fits
    when: {{model: chat}}
    strategy: kv_fit
    local: [local]
    spill: [hosted]
  - name: local-only
    when: {{model: tiny}}
    strategy: kv_fit
    local: [local]
  - name: hosted-first
    when: {{model: [fallback, shaky, limited, slowfirst]}}
    route: [flaky, shaky, limited, slowpoke, local]
teams: {{red: {{}}}}
"""


@pytest.fixture(scope="package")
def hybrid(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway + small-pool engine shared by the spill, fallback and breaker tests."""
    with serving(tmp_path_factory.mktemp("hybrid"), hybrid_policy(fake.url)) as gateway:
        yield gateway


def roomy_policy(fake: str) -> str:
    """tiny-random with its default KV pool (its context, 4096 tokens, is the limit) and the fake as
    hosted: `chat` spills, `private` is local-only."""
    return "\nversion: 1\nhealth: {failure_threshold: 3, cooldown_s: 1}\n" + engine_and_hosted(fake) + """\
  private:
    deployments: [{backend: local, model: tiny-random}]
teams: {red: {}}
rules:
  - name: local-while-it-fits
    strategy: kv_fit
    local: [local]
    spill: [hosted]
"""


@pytest.fixture(scope="package")
def roomy(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with serving(tmp_path_factory.mktemp("roomy"), roomy_policy(fake.url)) as gateway:
        yield gateway
