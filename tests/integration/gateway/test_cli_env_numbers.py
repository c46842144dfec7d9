"""A malformed number in the environment (HYBRIDGW_MAX_BODY_BYTES=abc, a *_TIMEOUT_S, ...) is one line naming
the variable and its value, exit 1, from every command that reads the settings (`serve` before it spawns
anything), as a real process; never a traceback."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import hybridgw

COMMANDS = {"keys": ("keys", "list"), "serve": ("serve", "--port", "0"), "shadow": ("shadow", "count", "--team", "t")}


def _run(data_dir: Path, variable: str, value: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HYBRIDGW_POLICY", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update({"HYBRIDGW_DATA_DIR": str(data_dir), variable: value})
    return subprocess.run(hybridgw(*args), env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("command", "variable", "value"), [
    ("keys", "HYBRIDGW_MAX_BODY_BYTES", "abc"),
    ("serve", "HYBRIDGW_MAX_BODY_BYTES", "4MB"),
    ("shadow", "HYBRIDGW_MAX_BODY_BYTES", "abc"),
    ("serve", "HYBRIDGW_HEADER_TIMEOUT_S", "soon"),
    ("keys", "HYBRIDGW_STREAM_WRITE_TIMEOUT_S", "30s"),
    ("serve", "HYBRIDGW_LEDGER_UNREADY_AFTER_S", "-5"),
    ("serve", "HYBRIDGW_HEAP_TRIM_S", "often"),
    ("serve", "HYBRIDGW_MAX_CONNECTIONS", "2.5"),
    ("serve", "HYBRIDGW_WORKERS", "many"),
    ("serve", "HYBRIDGW_TRACE_SAMPLE_RATIO", "half"),
    ("serve", "HYBRIDGW_TRACE_SAMPLE_RATIO", "2"),
    ("keys", "HYBRIDGW_HEAP_DUMP_FRAMES", "deep"),
])
def test_a_malformed_number_is_one_line_naming_it(tmp_path: Path, command: str, variable: str, value: str) -> None:
    refused = _run(tmp_path, variable, value, *COMMANDS[command])
    assert refused.returncode == 1, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith(f"hybridgw {command}: {variable}={value!r} is not a"), refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "logs").exists()  # `serve` spawned no engine
