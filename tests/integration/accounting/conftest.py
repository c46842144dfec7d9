"""Real processes for the accounting end-to-end tests: one durable redis-server, the fake OpenAI
upstream, a tiny OTLP/HTTP trace receiver, and two `hybridgw serve` replicas sharing that Redis
(REDIS_URL), each with its own data dir. Team keys are listed by hash in the policy, so both
replicas know them; the official openai SDK is the client."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

from tests.support import procs
from tests.support.clock import minute_with_room
from tests.support.otlp_sink import TraceSink
from tests.support.policy_text import fake_backend
from tests.support.procs import hybridgw, wait_until  # noqa: F401  (re-exported to this directory's tests)
from tests.support.redis_server import RedisServer, redis_server_path

ADMIN_KEY = "sk-accounting-admin"
CLIENT_TIMEOUT_S = 30.0  # every call is bounded: a hang fails the test instead of stalling the suite
# Teams, one per test area, so tests sharing the replicas never see each other's traffic.
TEAMS = ("red", "blue", "mixed", "outage", "capped", "restart", "rpm", "tpm", "broke", "thrifty", "metrics", "traced",
         "hashed", "cutoff", "shared")
RPM_LIMIT = 23
TPM_LIMIT = 900
# The hosted fake costs $1000 per million tokens in, $2000 out: a short request costs a few cents.
BUDGET_USD_PER_DAY = 0.25
CUTOFF_USD_PER_DAY = 0.05  # ~15 output tokens after the prompt at $2000/Mtok
T = TypeVar("T")





def in_one_minute(run: Callable[[], Coroutine[Any, Any, T]], longest_s: float = 25.0) -> T:
    """Run `run` inside one UTC minute (the limiter's window): wait for the next minute when less
    than `longest_s` is left of this one, and fail if the run still crossed a boundary."""
    minute = minute_with_room(longest_s)
    result = asyncio.run(run())
    assert time.time() // 60 == minute, "the burst crossed a minute boundary; its window split in two"
    return result


def team_key(team: str) -> str:
    return f"sk-acct-{team}-{secrets.token_hex(12)}"


def key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def policy_yaml(fake: str, keys: Mapping[str, str]) -> str:
    """`hosted` is priced (so cost and budgets are non-zero); `cheap` is free and is where an
    over-budget team with `on_exceed: route` goes."""
    hashes = {team: json.dumps([key_hash(key)]) for team, key in keys.items()}
    special = {
        "rpm": f"limits: {{requests_per_minute: {RPM_LIMIT}}}",
        "tpm": f"limits: {{tokens_per_minute: {TPM_LIMIT}}}",
        "broke": f"budget: {{usd_per_day: {BUDGET_USD_PER_DAY}, on_exceed: reject}}",
        "thrifty": f"budget: {{usd_per_day: {BUDGET_USD_PER_DAY}, on_exceed: route}}",
        # expects 1 output token when max_tokens is absent, so only the stream's own count can stop it
        "cutoff": f"budget: {{usd_per_day: {CUTOFF_USD_PER_DAY}}}, default_output_tokens: 1",
        # limits far away: every request goes through the limiter's Redis scripts
        "capped": "limits: {requests_per_minute: 100000, tokens_per_minute: 100000000}, budget: {usd_per_day: 1000}",
    }
    teams = "\n".join(f"  {team}: {{key_hashes: {hashes[team]}{', ' + special[team] if team in special else ''}}}"
                      for team in keys)
    # `broken`'s failures open its own circuit breaker, never the one of `hosted` the other tests use.
    return ("\nversion: 1\nbackends:\n" + fake_backend("hosted", fake, (1000, 2000))
            + fake_backend("cheap", fake, (0, 0)) + fake_backend("broken", fake) + f"""\
models:
  m:
    deployments:
      - {{backend: hosted, model: m}}
      - {{backend: cheap, model: "m;chunks=2"}}
  broken: {{deployments: [{{backend: broken, model: "m;status=500;message=upstream broke"}}]}}
teams:
{teams}
rules:
  - name: broken-only
    when: {{model: broken}}
    route: [broken]
  - name: over-budget-cheap
    when: {{over_budget: true}}
    route: [cheap]
  - name: hosted-first
    route: [hosted]
""")


class Gateway(procs.Served):
    """A replica: `hybridgw serve` on its own data dir (`restart` keeps it), and its /metrics."""

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"},
                         timeout=CLIENT_TIMEOUT_S).text


@dataclass
class Stack:
    """Two gateway replicas on one Redis, the fake upstream they both call, and the trace sink."""

    gateways: list[Gateway]
    redis: RedisServer
    fake: str
    traces: TraceSink
    keys: dict[str, str]
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, team: str, gateway: int = 0) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.gateways[gateway].url}/v1", api_key=self.keys[team],
                                  max_retries=0, timeout=CLIENT_TIMEOUT_S)

    @asynccontextmanager
    async def clients(self, team: str) -> AsyncIterator[list[openai.AsyncOpenAI]]:
        """One client per replica for `team`, closed on exit (inside the event loop that used them)."""
        made = [self.client(team, i) for i in range(len(self.gateways))]
        try:
            yield made
        finally:
            for client in made:
                await client.close()

    def usage(self, key: str | None, gateway: int = 0, **params: str) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.get(f"{self.gateways[gateway].url}/v1/usage", params=params, headers=headers,
                         timeout=CLIENT_TIMEOUT_S)

    def team_usage(self, team: str, gateway: int = 0) -> dict[str, Any]:
        response = self.usage(ADMIN_KEY, gateway, team=team, since="1d")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def report(self, team: str) -> dict[str, Any]:
        """`hybridgw report --format json` as an operator runs it, against the shared Redis."""
        out = subprocess.run(
            hybridgw("report", "--team", team, "--since", "1d", "--format", "json", "--no-hosted-price",
                     "--redis-url", self.redis.url, "--data-dir", str(self.root / "report")),
            check=False, capture_output=True, text=True, timeout=120, env=self.env)
        assert out.returncode == 0, out.stderr[-3000:]
        return dict(json.loads(out.stdout))

    def fake_last_request(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.fake}/_last_request", timeout=CLIENT_TIMEOUT_S).json())


def clean_env() -> dict[str, str]:
    # one gateway process each, as the tests kill and signal a gateway by its pid
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(procs.FOREIGN_ENV)}
    return {**inherited, "HYBRIDGW_WORKERS": "1"}


def _start_gateway(name: str, root: Path, config: Path, env: Mapping[str, str]) -> Gateway:
    served = procs.start_gateway(config, env, name=name, data_dir=root / name, unset=procs.FOREIGN_ENV)
    return Gateway(**vars(served))


# Package scope: shared by this directory's tests and stopped after its last one, not left running
# (engines and gateways poll while idle) through the rest of the suite.
@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    root = tmp_path_factory.mktemp("accounting")
    (root / "redis").mkdir()
    # Durable: every write is fsynced, so what Redis acknowledged survives the outage test's SIGKILL.
    redis = RedisServer(workdir=root / "redis", durable=True).start()
    traces = TraceSink().start()
    fake_port = procs.free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    fake = procs.start(procs.python_module("tests.fakes.openai_upstream", "--port", str(fake_port)),
                       env=clean_env(), name="accounting-fake")
    keys = {team: team_key(team) for team in TEAMS}
    config = root / "policy.yaml"
    config.write_text(policy_yaml(fake_url, keys))
    base = {**clean_env(), "REDIS_URL": redis.url, "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    # Replica A exports its spans over OTLP/HTTP to the sink (flushed every 100 ms); B exports none.
    traced = {**base, "HYBRIDGW_TRACES": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": traces.url,
              "OTEL_BSP_SCHEDULE_DELAY": "100"}
    gateways: list[Gateway] = []
    try:
        procs.wait_http(f"{fake_url}/health", fake)
        gateways = [_start_gateway("a", root, config, traced), _start_gateway("b", root, config, base)]
        for gateway in gateways:
            gateway.ready()
        yield Stack(gateways, redis, fake_url, traces, keys, root, base)
        for gateway in gateways:
            # No request may crash into a traceback, Redis outage included.
            assert gateway.proc.alive(), gateway.log()[-3000:]
            assert "Traceback" not in gateway.log(), gateway.log()[-5000:]
    finally:
        for gateway in gateways:
            procs.stop(gateway.proc)
        procs.stop(fake)
        traces.stop()
        redis.stop()
