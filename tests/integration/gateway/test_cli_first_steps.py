"""What a new user tries first with the `hybridgw` command, as a real process: a key scoped to the
embedded default policy's alias (served by a spawned engine), and wrong values for its flags, each
refused with one line that names the flag (never a validation dump)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import hybridgw


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HYBRIDGW_POLICY", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["HYBRIDGW_DATA_DIR"] = str(data_dir)
    return subprocess.run(hybridgw(*args), env=env, capture_output=True, text=True, timeout=120)


def test_a_key_scoped_to_the_default_policys_engine_alias_is_made(tmp_path: Path) -> None:
    made = _run(tmp_path, "keys", "create", "--team", "default", "--model", "smollm2", "--rpm", "10")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("sk-hgw-")
    listing = _run(tmp_path, "keys", "list")
    assert "smollm2" in listing.stdout


@pytest.mark.parametrize(("flags", "said"), [
    (("--rpm", "0"), "--rpm: "),
    (("--tpm", "-5"), "--tpm: "),
    (("--usd-per-day", "-1"), "--usd-per-day: "),
    (("--expires", "3x"), "--expires: '3x' is not a duration"),
])
def test_a_bad_flag_value_is_one_line_naming_the_flag(tmp_path: Path, flags: tuple[str, ...], said: str) -> None:
    refused = _run(tmp_path, "keys", "create", "--team", "default", *flags)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hybridgw keys: {said}"), refused.stderr
    assert "pydantic" not in refused.stderr and "Traceback" not in refused.stderr
