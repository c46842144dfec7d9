"""`hybridgw engine` makes OpenMP threads sleep at barriers (not spin) unless the user chose otherwise."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROBE = ("import os; from local_engine.cli import passive_openmp_waits; passive_openmp_waits(); "
         "import torch; print(os.environ.get('OMP_WAIT_POLICY'))")


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT,
                          env={**clean, "PYTHONPATH": str(ROOT), **env})
    return done.stdout.strip()


def test_threads_wait_passively_by_default() -> None:
    assert _probe() == "PASSIVE"


def test_a_users_wait_policy_is_kept() -> None:
    assert _probe(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
