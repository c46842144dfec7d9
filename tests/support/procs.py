"""Real processes for integration tests: a free loopback port, start a subprocess with its output
in a file, wait until a URL answers (failing fast if the process died), stop it cleanly."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None


def start(args: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
          name: str = "proc") -> Proc:
    """Start `args` (stdout+stderr to a temp file, its own process group)."""
    fd, log = tempfile.mkstemp(prefix=f"hybridgw-{name}-", suffix=".log")
    merged = {**os.environ, **(env or {})}
    with os.fdopen(fd, "wb") as out:
        popen = subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=merged, cwd=cwd, start_new_session=True)
    return Proc(popen, Path(log))


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_http(url: str, proc: Proc | None = None, timeout_s: float = 60.0) -> None:
    """Poll `url` until it answers with any HTTP status; raise with the process output if it dies."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"process exited with {proc.popen.returncode} before {url} answered:\n"
                               f"{proc.output()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered, with an error status: that still means it is up
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            tail = proc.output()[-4000:] if proc is not None else ""
            raise TimeoutError(f"{url} did not answer within {timeout_s}s\n{tail}")
        time.sleep(0.05)


def stop(proc: Proc, timeout_s: float = 10.0) -> int:
    """SIGTERM the process group, then SIGKILL if it lingers; returns the exit code."""
    if proc.alive():
        try:
            os.killpg(proc.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.popen.wait(timeout=timeout_s)
    return int(proc.popen.returncode)


@contextmanager
def running(args: Sequence[str], url: str, env: Mapping[str, str] | None = None, name: str = "proc",
            timeout_s: float = 60.0, cwd: str | Path | None = None) -> Iterator[Proc]:
    proc = start(args, env=env, cwd=cwd, name=name)
    try:
        wait_http(url, proc, timeout_s)
        yield proc
    finally:
        stop(proc)


@contextmanager
def gateway(config: str | Path, env: Mapping[str, str], name: str = "gateway", timeout_s: float = 60.0,
            port: int | None = None) -> Iterator[tuple[str, Proc]]:
    """`hybridgw serve --config CONFIG` on a free port (or `port`) for the block: yields its base URL and
    process; a traceback in its log when the block ends fails the test (no input may crash a request)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with running(hybridgw("serve", "--config", str(config), "--port", str(port)), f"{url}/healthz", env=env,
                 name=name, timeout_s=timeout_s) as proc:
        yield url, proc
        assert "Traceback" not in proc.output(), proc.output()[-4000:]


def hybridgw(*args: str) -> list[str]:
    """The `hybridgw` command line, run with this interpreter (the venv's)."""
    return [sys.executable, "-m", "gateway.cli", *args]


def wait_until(condition: Callable[[], Any], what: str, wait_s: float = 60.0, every_s: float = 0.1) -> Any:
    """Poll until `condition()` is truthy and return its value (a bound on waiting, not a speed assertion)."""
    deadline = time.monotonic() + wait_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {wait_s} s waiting for {what}")
        time.sleep(every_s)
