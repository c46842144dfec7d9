"""The scripted SSE server (a real HTTP server on a free port) and `hybridgw bench` run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import procs

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Scripted:
    url: str

    def requests_received(self) -> int:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=5) as r:
            return int(json.loads(r.read())["requests"])


@pytest.fixture(scope="module")
def scripted() -> Iterator[Scripted]:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    with procs.running(
        procs.python_module("tests.fakes.scripted_sse", "--port", str(port)),
        f"{url}/health",
        name="scripted-sse",
        cwd=REPO,
    ):
        yield Scripted(url)


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    """`hybridgw engine` on tiny-random (CPU), one a test module."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = procs.hybridgw("engine", "--model", "tiny-random", "--port", str(port))
    with procs.running(cmd, f"{url}/health", name="engine", timeout_s=180, cwd=REPO):
        yield url


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "bench", *args, "--no-progress"]


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bench_cmd(*args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())
