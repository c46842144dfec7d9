"""Keys only for teams the policy serves, through `hybridgw serve` and `hybridgw keys` as an operator
runs them: a typo'd team gets no key (CLI exit 2, admin API 400 on `team`); a key whose team is
removed from the running policy is refused (403) until `unknown_teams: default` serves it as
`default`; the admin key is never echoed."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway.conftest import create_key, hybridgw
from tests.support import procs
from tests.support.procs import wait_until

ADMIN_KEY = "sk-admin-0123456789-very-secret"
MESSAGES = [{"role": "user", "content": "hi"}]


def _policy(fake: str, teams: str, extra: str = "") -> str:
    return (f"backends:\n  up: {{kind: openai, base_url: \"{fake}/v1\", api_key: k}}\n"
            f"models:\n  m: {{deployments: [{{backend: up, model: m}}]}}\nteams: {teams}\n{extra}")


@dataclass
class Served:
    url: str
    config: Path
    data_dir: Path
    proc: procs.Proc
    fake: str

    def chat(self, key: str) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES},
                          headers={"authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture(scope="module")
def served(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("admission")
    config = root / "policy.yaml"
    config.write_text(_policy(fake_upstream, "{ops: {}, leaving: {}}"))
    env = {"HYBRIDGW_DATA_DIR": str(root / "data"), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-admission") as (url, proc):
        yield Served(url, config, root / "data", proc, fake_upstream)


def test_no_first_start_key_for_a_policy_without_team_default(served: Served) -> None:
    assert "sk-hgw-" not in served.proc.output()
    assert "the policy has no team `default`" in served.proc.output()


def _keys(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hybridgw("keys", "--data-dir", str(served.data_dir), "--config", str(served.config),
                                   *args), capture_output=True, text=True, timeout=60, check=False)


def test_the_cli_refuses_a_key_for_a_team_the_policy_does_not_name(served: Served) -> None:
    run = _keys(served, "create", "--team", "aps")
    assert run.returncode == 2 and run.stdout == ""
    assert "'aps' is not in the policy" in run.stderr and "leaving, ops" in run.stderr
    assert "aps" not in _keys(served, "list", "--all").stdout  # nothing was stored


def test_the_admin_api_refuses_it_with_a_400_on_team(served: Served) -> None:
    response = httpx.post(f"{served.url}/admin/keys", json={"team": "aps"},
                          headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "team", "unknown_team")
    assert "'aps'" in error["message"]


def test_a_team_removed_from_the_running_policy_is_refused_then_served_as_default(served: Served) -> None:
    key = create_key(served.data_dir, "leaving", served.config)
    assert served.chat(key).status_code == 200
    served.config.write_text(_policy(served.fake, "{ops: {}}"))
    refused = wait_until(lambda: (r := served.chat(key)).status_code == 403 and r, "the reload to drop the team")
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "unknown_team") and "'leaving'" in error["message"]
    served.config.write_text(_policy(served.fake, "{ops: {}, default: {}}", "unknown_teams: default\n"))
    ok = wait_until(lambda: (r := served.chat(key)).status_code == 200 and r, "unknown_teams: default to apply")
    request_id = ok.headers["x-request-id"]
    line = wait_until(lambda: next((x for x in served.proc.output().split("\n")[:-1] if request_id in x
                                    and x.startswith("{")), None), "the access record")
    assert '"team":"default"' in line


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models"])
def test_the_admin_key_is_not_echoed_when_used_as_a_team_key(served: Served, path: str) -> None:
    response = httpx.request("POST" if "chat" in path else "GET", f"{served.url}{path}",
                             json={"model": "m", "messages": MESSAGES},
                             headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert response.status_code == 401
    assert ADMIN_KEY[:6] not in response.text and "sk-admin" not in response.text
