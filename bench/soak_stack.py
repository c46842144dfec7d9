"""The processes bench/soak.py runs against: a durable Redis (one server, or a three-node cluster), the
fake OpenAI upstream, one `hybridgw serve` with REDIS_URL and keys for a few teams; and what /proc
says about the gateway (RSS, open fds, CPU seconds, its children included)."""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.key_store_redis import RedisKeyStore
from tests.support import procs
from tests.support.redis_server import RedisClusterServers, RedisServer

PAGE_TICKS = os.sysconf("SC_CLK_TCK")


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
def start_stack(workdir: Path, team_count: int, redis_kind: str) -> Iterator[Stack]:
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
                              env={**env, "REDIS_URL": redis.url, "HYBRIDGW_WORKERS": "1"},  # /proc of one pid
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


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                todo += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def _socket_ports(pid: int) -> dict[int, tuple[int, int]]:
    """{socket inode: (local port, remote port)} of the TCP sockets the process can see."""
    out = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            out[int(cols[9])] = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16))
    return out


def _fd_kinds(pid: int, ports: dict[str, set[int]]) -> Counter[str]:
    """The process's fds by what they are: client connections, upstream, redis, unix sockets, TCP sockets
    already closed (a peer's reset) but not yet released, files, pipes."""
    sockets = _socket_ports(pid)
    try:
        unix = {int(line.split()[6]) for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]}
    except OSError:
        unix = set()
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if not target.startswith("socket:["):
            kinds["files" if target.startswith("/") else target.split(":")[0]] += 1
            continue
        inode = int(target[8:-1])
        if inode not in sockets:
            kinds["unix" if inode in unix else "closed-tcp"] += 1  # closed: gone from the TCP table, fd still held
            continue
        local, remote = sockets[inode]
        kind = next((k for k, p in ports.items() if local in p or remote in p), "other-tcp")
        kinds[kind] += 1
    return kinds


def proc_sample(pid: int, ports: dict[str, set[int]] | None = None) -> dict[str, Any]:
    """RSS (kB), open fds (and what they are) and CPU seconds of the process and its children."""
    rss = fds = 0
    cpu = 0.0
    kinds: Counter[str] = Counter()
    for each in _descendants(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
            rss += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            fds += len(os.listdir(f"/proc/{each}/fd"))
            stat = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(stat[11]) + int(stat[12])) / PAGE_TICKS  # utime + stime
            kinds += _fd_kinds(each, ports or {})
        except (OSError, StopIteration):
            continue
    return {"rss_kb": rss, "fds": fds, "cpu_s": round(cpu, 2), "fd_kinds": dict(kinds)}
