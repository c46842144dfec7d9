"""`hybridgw report` as a user runs it, over the SQLite file and over Redis, and the HTML report
rendered by headless Chromium with its five plots present."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from observability.ledger import Ledger
from observability.redis_store import RedisStore
from observability.sqlite_store import SqliteStore
from observability.stores import SQLITE_FILENAME
from tests.integration.observability.conftest import REPO
from tests.integration.observability.replica import replica_record
from tests.support.chromium import PNG_MAGIC, Browser, svg_plots
from tests.support.redis_server import RedisServer

COUNT = 300


def _fill(store: SqliteStore | RedisStore) -> None:
    ledger = Ledger(store).start()
    now = time.time()
    for i in range(COUNT):  # spread over the last five days
        ledger.submit(replace(replica_record("cli", i), time=now - 300 - i * 1400))
    ledger.close()


def _report(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "report", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})}, check=False)


def _alpha() -> list:  # type: ignore[type-arg]
    return [r for r in (replica_record("cli", i) for i in range(COUNT)) if r.team == "alpha"]


def test_cli_json_from_the_sqlite_file(tmp_path: Path) -> None:
    _fill(SqliteStore(tmp_path / SQLITE_FILENAME))
    done = _report("--team", "alpha", "--since", "7d", "--format", "json", "--hosted-model", "gpt-4o-mini",
                   env={"HYBRIDGW_DATA_DIR": str(tmp_path), "REDIS_URL": ""})
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    alpha = _alpha()
    assert body["requests"] == len(alpha)
    assert body["prompt_tokens"] == sum(r.prompt_tokens for r in alpha)
    # gpt-4o-mini list prices from litellm's bundled table: $0.15 / $0.60 per million tokens
    hosted = sum(r.prompt_tokens for r in alpha) * 0.15e-6 + sum(r.completion_tokens for r in alpha) * 0.6e-6
    assert body["hosted_cost_usd"] == pytest.approx(hosted)
    assert {b["backend"] for b in body["backends"]} == {"openai", "local"}


def test_cli_refuses_bad_since_and_missing_data(tmp_path: Path) -> None:
    bad = _report("--since", "soon", env={"HYBRIDGW_DATA_DIR": str(tmp_path)})
    assert bad.returncode == 2 and "since" in bad.stderr
    empty = _report("--no-hosted-price", env={"HYBRIDGW_DATA_DIR": str(tmp_path / "none"), "REDIS_URL": ""})
    assert empty.returncode == 1 and "no usage recorded yet" in empty.stderr


def test_cli_table_from_redis(redis_server: RedisServer) -> None:
    _fill(RedisStore.from_url(redis_server.url))
    done = _report("--since", "7d", "--no-hosted-price", "--redis-url", redis_server.url)
    assert done.returncode == 0, done.stderr
    first_lines = done.stdout.splitlines()[:2]
    assert "team *" in first_lines[0] and first_lines[1].split()[:2] == ["requests", str(COUNT)]


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = Browser(tmp_path / "profile")
    _fill(SqliteStore(tmp_path / SQLITE_FILENAME))
    out = tmp_path / "report.html"
    done = _report("--team", "alpha", "--format", "html", "--out", str(out), "--no-hosted-price",
                   env={"HYBRIDGW_DATA_DIR": str(tmp_path), "REDIS_URL": ""})
    assert done.returncode == 0, done.stderr
    found = svg_plots(browser.dom(out))
    assert set(found) == {"plot-isl-osl", "plot-ttft-isl", "plot-itl-position", "plot-e2e-box", "plot-daily-cost"}
    assert found["plot-isl-osl"].get("rect.cell", 0) >= 4
    assert found["plot-ttft-isl"].get("circle.point", 0) == len(_alpha())
    assert found["plot-ttft-isl"].get("line.fit", 0) == 1
    assert found["plot-itl-position"].get("polyline.series", 0) == 1
    assert found["plot-e2e-box"].get("g.box", 0) == 2  # openai and local
    assert found["plot-daily-cost"].get("rect.bar", 0) >= 5
    assert browser.screenshot(out, tmp_path / "report.png")[:8] == PNG_MAGIC
