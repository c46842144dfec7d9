"""The processes the gateway benches start around what they measure, in one place: the fake OpenAI
upstream, a team key made with `hybridgw keys`, LiteLLM Proxy as the peer (../shared/peers)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support import procs

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "peers" / "litellm_proxy.sh"  # the project's sibling, never an absolute path


def start_fake(*args: str, name: str = "fake") -> tuple[procs.Proc, int]:
    """tests/fakes/openai_upstream.py on a free port (`args`: its options, e.g. --chunks 16), answering."""
    port = procs.free_port()
    fake = procs.start(procs.python_module("tests.fakes.openai_upstream", "--port", str(port), *args), name=name)
    procs.wait_http(f"http://127.0.0.1:{port}/health", fake)
    return fake, port


def create_key(config: Path, env: Mapping[str, str], team: str = "bench", cwd: Path | None = None) -> str:
    """A new key of `team` in the data dir `env` names (`hybridgw keys create`, in a subprocess)."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "--config", str(config), "create", "--team",
                           team], env={**os.environ, **env}, capture_output=True, text=True, check=True,
                          cwd=cwd).stdout.strip()


def start_litellm(fake_port: int) -> tuple[int, int, str]:
    """LiteLLM Proxy in front of the fake upstream: (its pid, its port, its key); stop it with SIGTERM."""
    port = procs.free_port()
    out = subprocess.run(["bash", str(PEER), f"http://127.0.0.1:{fake_port}/v1", str(port)],
                         capture_output=True, text=True, check=True).stdout
    fields = dict(part.split("=", 1) for part in out.split())
    return int(fields["pid"]), port, fields["key"]
