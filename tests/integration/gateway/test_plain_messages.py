"""Messages a new user meets, in plain words, from real processes: the admin API's bad `duration` says what
a duration is (not pydantic's "Invalid type ...: Value error, ..."), and `hybridgw keys` with Redis not there
says that Redis at that URL (without its password) is unreachable, not "network:ConnectionError"."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.support import procs
from tests.support.procs import hybridgw

ADMIN_KEY = "sk-admin-plain-messages-0123456789"


def test_a_bad_duration_reads_plainly(fake_upstream: str, tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(f"""
backends:
  up: {{kind: openai, base_url: "{fake_upstream}/v1", api_key: k}}
models:
  m: {{deployments: [{{backend: up, model: m}}]}}
teams: {{ops: {{}}}}
""")
    env = {"HYBRIDGW_DATA_DIR": str(tmp_path / "data"), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-plain") as (url, _):
        bad = httpx.post(f"{url}/admin/keys", json={"team": "ops", "duration": "3x"},
                         headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert error["param"] == "duration" and error["type"] == "invalid_request_error"
    assert error["message"] == ("Invalid value for 'duration': '3x' is not a duration; "
                                "write e.g. 3600, 90s, 15m, 12h, 30d or 2w."), error


def test_keys_with_redis_not_there_names_it(tmp_path: Path) -> None:
    port = procs.free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k not in ("HYBRIDGW_POLICY", "REDIS_URL")}
    env.update({"HYBRIDGW_DATA_DIR": str(tmp_path / "data"), "REDIS_URL": f"redis://ops:s3cret@127.0.0.1:{port}/0"})
    for args in (("list",), ("create", "--team", "default")):
        done = subprocess.run(hybridgw("keys", *args), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"hybridgw keys: Redis at redis://127.0.0.1:{port}/0 is unreachable ("), done.stderr
        assert "s3cret" not in done.stderr and "network:" not in done.stderr
