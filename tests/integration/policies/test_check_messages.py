"""`hybridgw policy check` as a real process: a backend dropped for an unset requires_env is named with its
variable (what to set), and every shipped example checks clean, with no warnings (quality_floor's rules named
teams it did not define)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import policies
from tests.support.procs import hybridgw

EXAMPLES = sorted((Path(policies.__file__).parent / "examples").glob("*.yaml"))


def _check(*files: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "HYBRIDGW_POLICY")}
    return subprocess.run(hybridgw("policy", "check", *files), env={**base, **(env or {})}, capture_output=True,
                          text=True, timeout=120)


def test_an_absent_backend_is_named_with_its_variable() -> None:
    done = _check(str(EXAMPLES[0].parent / "spill_to_hosted.yaml"))
    assert done.returncode == 0, done.stderr
    assert "(absent: openai: requires_env OPENAI_API_KEY unset)" in done.stdout, done.stdout


def test_every_example_checks_without_warnings() -> None:
    for env in ({}, {"OPENAI_API_KEY": "k"}):
        done = _check(*map(str, EXAMPLES), env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(": ok — ") == len(EXAMPLES)
        assert "warning" not in done.stderr, done.stderr
