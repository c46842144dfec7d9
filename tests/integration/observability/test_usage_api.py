"""GET /v1/usage served by a real uvicorn process: each team's key sees only its own team; the
admin key sees any team and all of them; bad input gets an OpenAI-shaped error."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from observability.ledger import Ledger
from observability.sqlite_store import SqliteStore
from observability.stores import SQLITE_FILENAME
from tests.integration.observability.conftest import REPO
from tests.integration.observability.replica import replica_record
from tests.support.procs import free_port, python_module, running

KEYS = {"sk-alpha": "alpha", "sk-beta": "beta", "sk-admin": "*"}


@pytest.fixture(scope="module")
def usage_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("usage-data")
    ledger = Ledger(SqliteStore(data_dir / SQLITE_FILENAME)).start()
    now = time.time()
    for i in range(90):  # alpha, beta, gamma in turn: 30 requests each, in the last hour
        ledger.submit(replace(replica_record("api", i), time=now - 60 - i))
    ledger.close()
    port = free_port()
    args = python_module("uvicorn", "--factory", "tests.integration.observability.usage_app:create",
                         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning")
    env = {"HYBRIDGW_DATA_DIR": str(data_dir), "USAGE_TEST_KEYS": json.dumps(KEYS)}
    url = f"http://127.0.0.1:{port}"
    with running(args, f"{url}/v1/usage", env=env, name="usage-app", cwd=REPO):
        yield url


def _expected(team: str) -> dict[str, int]:
    records = [r for r in (replica_record("api", i) for i in range(90)) if r.team == team]
    return {"requests": len(records), "prompt_tokens": sum(r.prompt_tokens for r in records),
            "completion_tokens": sum(r.completion_tokens for r in records)}


def _get(url: str, key: str, **params: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/usage", params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_a_team_key_sees_its_own_team(usage_url: str) -> None:
    for key, team in (("sk-alpha", "alpha"), ("sk-beta", "beta")):
        body = _get(usage_url, key, since="1d").json()
        assert body["team"] == team
        assert {k: body[k] for k in ("requests", "prompt_tokens", "completion_tokens")} == _expected(team)
        assert body["savings_usd"] == pytest.approx(body["hosted_cost_usd"] - body["cost_usd"])
        assert "teams" not in body


def test_a_team_key_cannot_read_another_team(usage_url: str) -> None:
    response = _get(usage_url, "sk-alpha", team="beta")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "permission_error" and error["param"] == "team"
    assert _get(usage_url, "sk-alpha", team="alpha").json()["requests"] == 30


def test_admin_sees_any_team_and_all_teams(usage_url: str) -> None:
    assert _get(usage_url, "sk-admin", team="beta").json()["requests"] == _expected("beta")["requests"]
    everyone = _get(usage_url, "sk-admin").json()
    assert everyone["team"] == "*" and everyone["requests"] == 90
    assert {t["team"]: t["requests"] for t in everyone["teams"]} == {"alpha": 30, "beta": 30, "gamma": 30}


def test_bad_input_and_unknown_keys(usage_url: str) -> None:
    response = _get(usage_url, "sk-alpha", since="forever")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "since"
    assert _get(usage_url, "sk-alpha", format="pdf").status_code == 400
    assert _get(usage_url, "sk-nobody").status_code == 401


def test_csv_and_html_formats(usage_url: str) -> None:
    csv_text = _get(usage_url, "sk-beta", format="csv").text
    assert csv_text.startswith("section,name,metric,value") and "total,beta,requests,30" in csv_text
    html = _get(usage_url, "sk-beta", format="html")
    assert html.headers["content-type"].startswith("text/html") and 'id="plot-isl-osl"' in html.text


def test_a_window_beyond_retention_is_refused(usage_url: str) -> None:
    # 99999999w once made the Redis store enumerate ~7e8 (team, hour) keys; 400d is what is retained
    for since in ("99999999w", "401d", "9" * 400 + "s"):
        response = _get(usage_url, "sk-admin", since=since)
        assert response.status_code == 400, since
        error = response.json()["error"]
        assert error["param"] == "since" and "400d" in error["message"]
    assert _get(usage_url, "sk-admin", since="400d").json()["requests"] == 90
