"""The processes bench/soak.py runs against: a durable Redis (one server, or a three-node cluster), the
fake OpenAI upstream, one `hybridgw serve` with REDIS_URL and keys for a few teams. What /proc says
about the gateway (RSS, open fds, CPU seconds) is read by tests/support/proc_stats.py."""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.key_store_redis import RedisKeyStore
from tests.support import procs
from tests.support.proc_stats import proc_sample
from tests.support.redis_server import RedisClusterServers, RedisServer

__all__ = ["Stack", "proc_sample", "start_stack"]


def policy(fake: str, teams: list[str]) -> str:
    """`m` answers; `err500` and `errdrop` (their own backend, so their failures open no breaker
    of `m`'s) fail with a 500 or drop a stream after two chunks. Limits and a budget far away keep the
    limiter's Redis scripts and leases on the path of every request."""
    team_lines = "\n".join(f"  {t}: {{limits: {{requests_per_minute: 10000000, tokens_per_minute: 1000000000}}, "
                           f"budget: {{usd_per_day: 1000000}}}}" for t in teams)
    return f"""
version: 1
backends:
  up: {{kind: openai, base_url: "{fake}/v1", api_key: k, price: {{input_usd_per_mtok: 1, output_usd_per_mtok: 2}}}}
  flaky: {{kind: openai, base_url: "{fake}/v1", api_key: k}}
models:
  m: {{deployments: [{{backend: up, model: m}}]}}
  err500: {{deployments: [{{backend: flaky, model: "m;status=500;message=injected"}}]}}
  errdrop: {{deployments: [{{backend: flaky, model: "m;fail_after=2"}}]}}
teams:
{team_lines}
rules:
  - {{name: err500, when: {{model: err500}}, route: [flaky]}}
  - {{name: errdrop, when: {{model: errdrop}}, route: [flaky]}}
  - {{name: up, route: [up]}}
"""


@dataclass
class Stack:
    url: str  # the gateway's chat completions URL
    teams: list[str]
    keys: dict[str, str]
    redis_url: str
    gateway: procs.Proc
    redis: RedisServer | RedisClusterServers
    ports: dict[str, set[int]] = field(default_factory=dict)  # what a socket's port says it is: clients, …
    outages: list[float] = field(default_factory=list)

    @property
    def gateway_pid(self) -> int:
        return self.gateway.pid

    def restart_redis(self, down_s: float) -> None:
        """SIGKILL Redis (one node of a cluster), wait, start it again; its append-only file keeps the data."""
        node = self.redis if isinstance(self.redis, RedisServer) else self.redis.nodes[0]
        node.kill()
        time.sleep(down_s)
        node.start()
        self.outages.append(down_s)

    def log(self) -> str:
        return self.gateway.output()


@contextmanager
def start_stack(workdir: Path, team_count: int, redis_kind: str,
                gateway_env: dict[str, str] | None = None) -> Iterator[Stack]:
    (workdir / "redis").mkdir()
    redis: RedisServer | RedisClusterServers
    if redis_kind == "cluster":
        redis = RedisClusterServers(workdir / "redis").start()
    else:
        redis = RedisServer(workdir=workdir / "redis", durable=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "HYBRIDGW_", "OTEL_"))}
    fake_port, port = procs.free_port(), procs.free_port()
    fake = procs.start(procs.python_module("tests.fakes.openai_upstream", "--port", str(fake_port)), env=env,
                       name="soak-fake")
    started = [fake]
    try:
        procs.wait_http(f"http://127.0.0.1:{fake_port}/health", fake)
        teams = [f"soak{n}" for n in range(team_count)]
        (workdir / "policy.yaml").write_text(policy(f"http://127.0.0.1:{fake_port}", teams))
        store = RedisKeyStore.from_url(redis.url)
        keys = {team: store.create(team, "soak")[0] for team in teams}
        store.close()
        gateway = procs.start(procs.hybridgw("serve", "--config", str(workdir / "policy.yaml"), "--data-dir",
                                             str(workdir / "data"), "--port", str(port)),
                              env={**env, **(gateway_env or {}), "REDIS_URL": redis.url, "HYBRIDGW_WORKERS": "1"},  # /proc of one pid
                              name="soak-gateway")
        started.append(gateway)
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", gateway, timeout_s=120)
        nodes = redis.nodes if isinstance(redis, RedisClusterServers) else [redis]
        ports = {"clients": {port}, "upstream": {fake_port}, "redis": {n.port for n in nodes}}
        yield Stack(f"http://127.0.0.1:{port}/v1/chat/completions", teams, keys, redis.url, gateway, redis, ports)
    finally:
        for proc in reversed(started):
            procs.stop(proc)
        redis.stop()


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return -1


def heap_trim(stack: Stack) -> dict[str, Any] | None:
    """The gateway's heap trimmer's figures on /readyz (trims, bytes given back); None without one."""
    url = stack.url.split("/v1/", 1)[0] + "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read()).get("heap_trim")
    except urllib.error.HTTPError as exc:  # 503: not ready, the body is the same shape
        return json.loads(exc.read()).get("heap_trim")
    except OSError:
        return None
