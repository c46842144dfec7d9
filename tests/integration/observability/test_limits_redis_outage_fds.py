"""While Redis does not answer (a server stopped, or one still loading its data after a restart), the
gateway's limiter makes one connection attempt at a time: a burst of requests during the outage is
answered as before (limits fail open: 200), but does not open a socket per request. The soak's hour
saw the gateway's Redis sockets at 66 (the limiter's pool bound, 64) in the burst of a restart."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

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
    with _gateway(redis_server, tmp_path) as gw:
        yield gw


@pytest.fixture
def durable_gateway(tmp_path: Path) -> Iterator[Gateway]:
    """On a Redis whose data survives a kill: its restart loads it (LOADING until done)."""
    (tmp_path / "redis").mkdir()
    with RedisServer(workdir=tmp_path / "redis", durable=True) as server, _gateway(server, tmp_path) as gw:
        yield gw


@contextmanager
def _gateway(redis_server: RedisServer, tmp_path: Path) -> Iterator[Gateway]:
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


def _preload(server: RedisServer, keys: int) -> None:
    """`keys` small keys in the append-only file's RDB base, which a restart loads key by key."""
    client = redis.Redis.from_url(server.url)
    try:
        pipe = client.pipeline(transaction=False)
        for k in range(keys):
            pipe.set(f"preload:{k}", b"x" * 64)
        pipe.execute()
        client.bgrewriteaof()
        while any(client.info("persistence")[f] for f in ("aof_rewrite_in_progress", "aof_rewrite_scheduled")):
            time.sleep(0.05)
    finally:
        client.close()


def _loading(server: RedisServer) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"-LOADING")
    except OSError:
        return False


def test_a_burst_on_a_restarted_redis_still_loading_opens_no_socket_per_request(durable_gateway: Gateway) -> None:
    gw = durable_gateway
    assert asyncio.run(_requests(gw, 3)) == [200] * 3
    level = gw.redis_sockets()
    _preload(gw.redis, 40_000)
    gw.redis.kill()
    time.sleep(1.5)  # down a while, no request meanwhile: as when the limiter's leases ride out an outage
    # ~4 s loading 40,000 keys; between batches of keys it accepts connections, answers the handshake
    # (CLIENT SETNAME) and answers every command LOADING
    gw.redis.extra_args = ("--key-load-delay", "100", "--loading-process-events-interval-bytes", "65536")
    starting = threading.Thread(target=gw.redis.start, args=(60.0,))
    starting.start()
    try:
        deadline = time.monotonic() + 30
        while not _loading(gw.redis):
            assert time.monotonic() < deadline, "the restarted Redis never answered LOADING"
            time.sleep(0.01)
        peak, statuses = _most_sockets_while(gw, BURST)
        still_loading = _loading(gw.redis)
    finally:
        starting.join()
    assert still_loading, "Redis finished loading during the burst: make it load longer"
    assert statuses == [200] * BURST  # limits fail open while Redis loads, as before
    # before: the gate had seen no failure (nothing asked Redis during the outage), so every request's
    # connect went through, each then answered LOADING (~40 sockets)
    assert peak <= level + 4, f"{peak} Redis sockets during the burst, {level} before the outage"
    assert asyncio.run(_requests(gw, 3)) == [200] * 3
