"""Real processes for integration tests: a free loopback port, start a subprocess with its output
in a file, wait until a URL answers (failing fast if the process died), stop it cleanly; and
`hybridgw serve` as the tests start it (`gateway`, `served`, `start_gateway`)."""
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What a developer's shell may carry that would change what a gateway does (its Redis, workers, tracing).
FOREIGN_ENV = ("REDIS_URL", "HYBRIDGW_", "OTEL_")


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
          name: str = "proc", unset: Sequence[str] = ()) -> Proc:
    """Start `args` (stdout+stderr to a temp file, its own process group) in this environment less the
    variables whose names start with one of `unset`, plus `env`."""
    fd, log = tempfile.mkstemp(prefix=f"hybridgw-{name}-", suffix=".log")
    merged = {**{k: v for k, v in os.environ.items() if not k.startswith(tuple(unset))}, **(env or {})}
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


@dataclass
class Served:
    """One `hybridgw serve` a test started: its URL and log, and how to start it again the same way."""

    url: str  # http://127.0.0.1:PORT
    args: list[str]
    env: dict[str, str]
    unset: tuple[str, ...]
    name: str
    proc: Proc
    data_dir: Path | None = None  # its --data-dir, when the test gave one
    old_logs: list[str] = field(default_factory=list)  # the output of its runs before a restart

    def log(self) -> str:
        return "".join(self.old_logs) + self.proc.output()

    def ready(self, timeout_s: float = 120.0) -> Served:
        wait_http(f"{self.url}/healthz", self.proc, timeout_s)
        return self

    def restart(self, timeout_s: float = 120.0) -> int:
        """SIGTERM (a clean shutdown: the ledger flushes or spills what it holds), then the same command
        on the same port and data dir; returns the old process's exit code."""
        code = stop(self.proc)
        self.old_logs.append(self.proc.output())
        self.proc = start(self.args, self.env, name=self.name, unset=self.unset)
        self.ready(timeout_s)
        return code


def start_gateway(config: str | Path | None, env: Mapping[str, str] | None = None, *, name: str = "gateway",
                  port: int | None = None, data_dir: str | Path | None = None, redis_url: str | None = None,
                  workers: int | None = None, extra: Sequence[str] = (), unset: Sequence[str] = ()) -> Served:
    """Start `hybridgw serve` on a free port (or `port`) without waiting for it (see `Served.ready`):
    `--config` unless None (the embedded default policy), `--data-dir`, `--workers` and `extra` when given;
    REDIS_URL set (also to "") when given; the environment as `start` makes it from `env` and `unset`, with
    HYBRIDGW_WORKERS=1 unless `env` says otherwise (the suite's tests read one process's log)."""
    port = port or free_port()
    args = hybridgw("serve", "--port", str(port))
    args += ["--config", str(config)] if config is not None else []
    args += ["--data-dir", str(data_dir)] if data_dir is not None else []
    args += ["--workers", str(workers)] if workers is not None else []
    full_env = {"HYBRIDGW_WORKERS": "1", **(env or {})}
    if redis_url is not None:
        full_env["REDIS_URL"] = redis_url
    args += list(extra)
    return Served(f"http://127.0.0.1:{port}", args, full_env, tuple(unset), name,
                  start(args, full_env, name=name, unset=unset), Path(data_dir) if data_dir else None)


@contextmanager
def served(config: str | Path | None, env: Mapping[str, str] | None = None, *, timeout_s: float = 120.0,
           **options: Any) -> Iterator[Served]:
    """`start_gateway(config, env, **options)` for the block, once it answers; a traceback in its log when
    the block ends fails the test (no input may crash a request)."""
    gw = start_gateway(config, env, **options)
    try:
        yield gw.ready(timeout_s)
        assert "Traceback" not in gw.log(), gw.log()[-4000:]
    finally:
        stop(gw.proc)


@contextmanager
def gateway(config: str | Path, env: Mapping[str, str], name: str = "gateway", timeout_s: float = 60.0,
            port: int | None = None, **options: Any) -> Iterator[tuple[str, Proc]]:
    """`served`, yielding its base URL and process."""
    with served(config, env, name=name, timeout_s=timeout_s, port=port, **options) as gw:
        yield gw.url, gw.proc


def hybridgw(*args: str) -> list[str]:
    """The `hybridgw` command line, run with this interpreter (the venv's)."""
    return [sys.executable, "-m", "gateway.cli", *args]


def gone(pid: int) -> bool:
    """No process has this pid (any more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


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
