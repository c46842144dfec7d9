"""Fixtures for observability integration tests: a real redis-server per test, and replica processes."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, redis_server_path

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    server = RedisServer(workdir=tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def durable_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Fsyncs every write to an append-only file, so what it acknowledged survives a SIGKILL."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    server = RedisServer(workdir=tmp_path, durable=True).start()
    yield server
    server.stop()


def replica(*args: str) -> subprocess.Popen[str]:
    """Start tests/integration/observability/replica.py as its own process (a stand-in gateway)."""
    return subprocess.Popen([sys.executable, "-m", "tests.integration.observability.replica", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout_s: float = 120.0) -> dict[str, object]:
    """Wait for a replica, fail with its stderr if it failed, return its last JSON line."""
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, f"replica exited {proc.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    return dict(json.loads(out.strip().splitlines()[-1]))
