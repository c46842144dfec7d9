"""`hybridgw report` prices the all-hosted comparison as the policy does: an alias such as `chat`
or `smollm2` at its hosted deployment's price (not by its own name, which no price table knows),
and every output format names the price it used."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from observability.sqlite_store import SqliteStore
from observability.stores import SQLITE_FILENAME
from tests.integration.observability.conftest import REPO
from tests.unit.observability.conftest import record

POLICY = """
version: 1
backends:
  local: {kind: engine, model: smollm2}
  hosted:
    kind: openai
    base_url: "http://127.0.0.1:9/v1"
    price: {input_usd_per_mtok: 2, output_usd_per_mtok: 8}
models:
  chat:
    deployments:
      - {backend: local, model: smollm2}
      - {backend: hosted, model: house-hosted-model}
"""
PROMPT, COMPLETION, REQUESTS = 1000, 200, 5


def _report(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "OPENAI_API_KEY")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", "report", "--since", "1d", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
                          env={**env, "HYBRIDGW_DATA_DIR": str(data_dir)})


def _served_locally(data_dir: Path, alias: str) -> None:
    store = SqliteStore(data_dir / SQLITE_FILENAME)
    store.write_batch([record(model_alias=alias, backend="local", model="smollm2", cost_usd=0.0, time=time.time() - 60,
                              prompt_tokens=PROMPT, completion_tokens=COMPLETION) for _ in range(REQUESTS)])
    store.close()


def test_an_alias_named_chat_is_priced_at_its_hosted_deployment(tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(POLICY)
    _served_locally(tmp_path, "chat")
    label = "hosted/house-hosted-model $2 in, $8 out per Mtok (policy)"
    done = _report(tmp_path, "--config", str(config), "--format", "json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    hosted = REQUESTS * (PROMPT * 2e-6 + COMPLETION * 8e-6)
    assert body["hosted_cost_usd"] == pytest.approx(hosted) and body["savings_usd"] == pytest.approx(hosted)
    assert body["hosted_prices"] == {"chat": label} and body["unpriced_models"] == []
    table = _report(tmp_path, "--config", str(config)).stdout
    assert "(100%)" in table and f"chat priced as {label}" in table
    rows = list(csv.DictReader(io.StringIO(_report(tmp_path, "--config", str(config), "--format", "csv").stdout)))
    assert {(r["name"], r["value"]) for r in rows if r["section"] == "hosted_price"} == {("chat", label)}
    assert label in _report(tmp_path, "--config", str(config), "--format", "html").stdout


def test_the_default_policy_prices_smollm2_as_its_hosted_fallback(tmp_path: Path) -> None:
    """No --config: the embedded default policy, whose hosted backend counts even without its API key."""
    _served_locally(tmp_path, "smollm2")
    done = _report(tmp_path, "--format", "json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["savings_usd"] > 0 and body["hosted_prices"]["smollm2"].startswith("openai/gpt-4o-mini $0.15 in")


def test_hosted_model_overrides_the_policy_and_says_so(tmp_path: Path) -> None:
    _served_locally(tmp_path, "chat")
    body = json.loads(_report(tmp_path, "--hosted-model", "gpt-4o-mini", "--format", "json").stdout)
    assert body["hosted_prices"]["chat"] == "gpt-4o-mini $0.15 in, $0.6 out per Mtok (litellm, --hosted-model)"
    bad = _report(tmp_path, "--config", str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2 and "cannot price from the policy" in bad.stderr
