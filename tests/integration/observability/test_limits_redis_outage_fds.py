"""While Redis does not answer (a server stopped, or one still loading its data after a restart), the
gateway's limiter makes one connection attempt at a time: a burst of requests during the outage is
answered as before (limits fail open: 200), but does not open a socket per request. The soak's hour
saw the gateway's Redis sockets at 66 (the limiter's pool bound, 64) in the burst of a restart."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.key_store_redis import RedisKeyStore
from tests.support import procs
from tests.support.proc_stats import proc_sample
from tests.support.redis_server import RedisServer

BURST = 40
# 250/min is too small for a lease (observability/limit_leases.py): every request asks Redis
POLICY = """
version: 1
backends:
  hosted: {{kind: openai, base_url: "{fake}/v1", api_key: k, price: {{input_usd_per_mtok: 1, output_usd_per_mtok: 2}}}}
models:
  m: {{deployments: [{{backend: hosted, model: m}}]}}
teams:
  alpha: {{limits: {{requests_per_minute: 250}}}}
rules:
  - {{name: hosted, route: [hosted]}}
"""


@dataclass
class Gateway:
    url: str
    proc: procs.Proc
    redis: RedisServer
    key: str

    def redis_sockets(self) -> int:
        return proc_sample(self.proc.pid, {"redis": {self.redis.port}})["fd_kinds"].get("redis", 0)


@pytest.fixture
def gateway(redis_server: RedisServer, tmp_path: Path) -> Iterator[Gateway]:
    fake_port = procs.free_port()
    fake = procs.start(procs.python_module("tests.fakes.openai_upstream", "--port", str(fake_port)),
                       name="outage-fds-fake", unset=procs.FOREIGN_ENV)
    try:
        (tmp_path / "policy.yaml").write_text(POLICY.format(fake=f"http://127.0.0.1:{fake_port}"))
        store = RedisKeyStore.from_url(redis_server.url)
        key = store.create("alpha", "outage-fds")[0]
        store.close()
        procs.wait_http(f"http://127.0.0.1:{fake_port}/health", fake)
        with procs.served(tmp_path / "policy.yaml", name="outage-fds-gw", data_dir=tmp_path / "data",
                          redis_url=redis_server.url, unset=procs.FOREIGN_ENV) as gw:
            yield Gateway(gw.url, gw.proc, redis_server, key)
    finally:
        procs.stop(fake)


async def _requests(gw: Gateway, count: int) -> list[int]:
    async def one(client: httpx.AsyncClient, i: int) -> int:
        response = await client.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {gw.key}"},
                                     json={"model": "m", "messages": [{"role": "user", "content": f"outage {i}"}],
                                           "max_tokens": 4})
        return response.status_code

    async with httpx.AsyncClient(timeout=60.0, limits=httpx.Limits(max_connections=count)) as client:
        return list(await asyncio.gather(*(one(client, i) for i in range(count))))


def _most_sockets_while(gw: Gateway, count: int) -> tuple[int, list[int]]:
    """`count` requests at once; the most Redis sockets the gateway held at any look while they ran."""
    peak, done = gw.redis_sockets(), threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, gw.redis_sockets())
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        statuses = asyncio.run(_requests(gw, count))
    finally:
        done.set()
        watcher.join()
    return peak, statuses


def test_a_burst_while_redis_does_not_answer_opens_no_socket_per_request(gateway: Gateway) -> None:
    assert asyncio.run(_requests(gateway, 3)) == [200] * 3  # the limiter's, key store's, ledger's connections
    level = gateway.redis_sockets()
    pid = gateway.redis._proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)  # the kernel still accepts connections; no answer comes
    try:
        assert asyncio.run(_requests(gateway, 1)) == [200]  # the limiter's round trips time out: it fails open
        peak, statuses = _most_sockets_while(gateway, BURST)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert statuses == [200] * BURST  # what the limiter answers during an outage: unchanged
    # the limiter's pooled connections (stuck on the stopped server), one connection attempt, and the
    # key store's and the ledger's own; before: one new socket per request, up to the pool's 64
    assert peak <= level + 4, f"{peak} Redis sockets during the burst, {level} before the outage"
    assert asyncio.run(_requests(gateway, 3)) == [200] * 3
