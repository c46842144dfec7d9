"""`hybridgw engine` as a real process on a free loopback port, and clients for it (openai SDK, httpx)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.support import procs


@dataclass
class Engine:
    url: str  # http://127.0.0.1:P
    proc: procs.Proc

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)

    def state(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/engine/state", timeout=10).json()

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0) -> dict[str, Any]:
        """Poll the engine state until `check` holds (a bound on waiting, not a speed assertion)."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state()
            if check(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"engine state never satisfied the check: {state}")
            time.sleep(0.05)


def metric_value(text: str, name: str) -> float:
    """The value of one un-labelled-by-us sample line (`name{model=...} value`)."""
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


@contextmanager
def engine_process(*args: str, timeout_s: float = 180.0, env: Mapping[str, str] | None = None) -> Iterator[Engine]:
    port = procs.free_port()
    cmd = procs.python_module("gateway.cli", "engine", "--port", str(port), *args)
    url = f"http://127.0.0.1:{port}"
    with procs.running(cmd, f"{url}/health", env=env, name="engine", timeout_s=timeout_s) as proc:
        yield Engine(url, proc)


# Package scope: shared by this directory's tests and stopped after its last one, not left running
# (engines and gateways poll while idle) through the rest of the suite.
@pytest.fixture(scope="package")
def tiny_engine() -> Iterator[Engine]:
    """The tiny random-weight Llama with SmolLM2's tokenizer, default settings."""
    with engine_process("--model", "tiny-random") as engine:
        yield engine


@pytest.fixture(scope="package")
def small_pool_engine() -> Iterator[Engine]:
    """10 KV blocks of 16 tokens (512 bytes per token): concurrent requests must preempt."""
    with engine_process("--model", "tiny-random", "--kv-cache-bytes", str(10 * 16 * 512),
                        "--no-prefix-caching") as engine:
        yield engine


@pytest.fixture(scope="package")
def one_slot_engine() -> Iterator[Engine]:
    """One running sequence and a queue of one: the third concurrent request is refused."""
    with engine_process("--model", "tiny-random", "--max-num-seqs", "1", "--max-num-batched-tokens", "64",
                        "--max-waiting", "1") as engine:
        yield engine
