"""The report window a client or operator may ask for is bounded by what the stores retain."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from observability.report import MAX_SINCE_S, parse_since

REPO = Path(__file__).resolve().parents[3]


def test_the_longest_window_is_what_is_retained() -> None:
    assert parse_since("400d") == MAX_SINCE_S
    for text in ("401d", "58w", "99999999w", "9" * 400 + "s"):
        with pytest.raises(ValueError, match="at most 400d"):
            parse_since(text)


def test_the_report_cli_refuses_a_window_beyond_retention(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "report", "--since", "99999999w",
                           "--data-dir", str(tmp_path), "--no-hosted-price"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "at most 400d" in done.stderr
