"""The web console (/console) in a real headless Chromium against `hybridgw serve`: without a key only
the login shows; with the admin key a key created through the page is in the list and works, a rotation
and a revoke through the page take effect (the old secret, then the key, get 401), a name and tag holding markup render as text;
live backends show an engine's KV use and queue; a team's key gets 403 from every admin call the page
makes and sees only the usage view. Screenshots land in the test's tmp folder."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.policies.state_server import VLLM_METRICS
from tests.support import procs
from tests.support.cdp import Page, browser_page
from tests.support.chromium import PNG_MAGIC
from tests.support.procs import wait_until

ADMIN_KEY = "sk-admin-console-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MARKUP_NAME = "<script>window.pwned = 1</script>"
MARKUP_TAG = "<img src=x onerror=\"window.pwned = 2\">"


class _VllmMetrics(BaseHTTPRequestHandler):
    """A vLLM server's /metrics, as far as the gateway's state poller reads it: 42% KV used, 3 waiting."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = VLLM_METRICS.format(blocks=1000, usage=0.42, running=2, waiting=3).encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Console:
    url: str
    proc: procs.Proc

    def chat(self, key: str) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)


@pytest.fixture(scope="module")
def console(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    metrics = ThreadingHTTPServer(("127.0.0.1", 0), _VllmMetrics)
    threading.Thread(target=metrics.serve_forever, daemon=True).start()
    root = tmp_path_factory.mktemp("console")
    config = root / "policy.yaml"
    config.write_text(f"""
backends:
  up: {{kind: openai, base_url: "{fake_upstream}/v1", api_key: k, price: {{input_usd_per_mtok: 100, output_usd_per_mtok: 100}}}}
  gpu:
    kind: openai
    base_url: "{fake_upstream}/v1"
    api_key: k
    state: vllm
    state_url: "http://127.0.0.1:{metrics.server_address[1]}/metrics"
    kv_bytes_per_token: 1024
models:
  m: {{deployments: [{{backend: up, model: m}}]}}
teams:
  ops: {{budget: {{usd_per_day: 50}}}}
  free: {{}}
""")
    env = {"HYBRIDGW_DATA_DIR": str(root / "data"), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    try:
        with procs.gateway(config, env, "gateway-console") as (url, proc):
            yield Console(url, proc)
    finally:
        metrics.shutdown()
        metrics.server_close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with browser_page(tmp_path / "profile") as p:
        yield p


def _visible(page: Page, selector: str) -> list[str]:
    return list(page.eval(f"[...document.querySelectorAll({json.dumps(selector)})]"
                          ".filter((e) => e.offsetParent !== null).map((e) => e.id || e.textContent.trim())"))


def _login(page: Page, console: Console, key: str) -> None:
    page.goto(f"{console.url}/console")
    page.eval(f"document.getElementById('login-key').value = {json.dumps(key)};"
              "document.getElementById('login-form').requestSubmit(); true")
    page.wait("!document.getElementById('tabs').hidden", "the console to log in")


def _text(page: Page, element_id: str) -> str:
    return str(page.eval(f"document.getElementById({json.dumps(element_id)}).textContent"))


def test_without_a_key_the_page_shows_only_the_login(console: Console, page: Page) -> None:
    assert f"web console on {console.url}/console (admin key to log in)" in console.proc.output()
    served = httpx.get(f"{console.url}/console")
    assert served.status_code == 200 and "script-src 'self'" in served.headers["content-security-policy"]
    page.goto(f"{console.url}/console")
    assert _visible(page, "section, nav, table") == ["login"]
    assert page.eval("sessionStorage.length") == 0
    page.eval("document.getElementById('login-key').value = 'sk-wrong'; document.getElementById('login-form').requestSubmit()")
    page.wait("document.getElementById('login-error').textContent.includes('401')", "the refusal to show")
    assert _visible(page, "section, nav, table") == ["login"] and page.eval("sessionStorage.length") == 0


def test_a_key_made_in_the_page_works_and_a_rotation_and_a_revoke_in_the_page_take_effect(console: Console, page: Page,
                                                                          tmp_path: Path) -> None:
    _login(page, console, ADMIN_KEY)
    page.wait("document.querySelector('#backends td')", "the backends table")
    page.eval("document.querySelector('[data-tab=keys]').click()")
    page.wait("document.querySelectorAll('#k-team option').length === 2", "the team choices")
    page.eval("const v = (id, x) => { document.getElementById(id).value = x; };"
              f"v('k-team', 'ops'); v('k-name', {json.dumps(MARKUP_NAME)}); v('k-tags', {json.dumps('src=' + MARKUP_TAG)});"
              "v('k-day', '5'); v('k-rpm', '100'); document.getElementById('create-form').requestSubmit()")
    key = page.wait("document.getElementById('new-key-value')?.textContent", "the new key to show")
    key_id = key.split("-")[2]
    page.wait(f"document.querySelector('[data-revoke=\"{key_id}\"]')", "the new key in the list")
    listed = httpx.get(f"{console.url}/admin/keys/{key_id}", headers=ADMIN).json()
    assert (listed["team"], listed["name"], listed["limits"]["requests_per_minute"]) == ("ops", MARKUP_NAME, 100)

    # the markup in the name and the tag is shown as text, and nothing of it ran
    assert MARKUP_NAME in _text(page, "keys") and MARKUP_TAG in _text(page, "keys")
    assert page.eval("document.querySelectorAll('#keys script, #keys img').length") == 0
    assert page.eval("window.pwned === undefined")
    assert page.screenshot(tmp_path / "console-keys.png").startswith(PNG_MAGIC)

    assert console.chat(key).status_code == 200
    # rotate with no grace period: the old secret stops, the new one (shown once) works
    page.eval(f"document.getElementById('grace').value = '0'; document.querySelector('[data-rotate=\"{key_id}\"]').click()")
    page.wait("document.getElementById('new-key').textContent.includes('rotated')", "the rotated key to show")
    rotated = page.eval("document.getElementById('new-key-value').textContent")
    assert rotated != key and rotated.split("-")[2] == key_id
    assert console.chat(key).status_code == 401 and console.chat(rotated).status_code == 200
    key = rotated  # the page shows a new key once the list is reloaded
    page.eval(f"document.querySelector('[data-revoke=\"{key_id}\"]').click()")  # arms the button
    assert page.eval(f"document.querySelector('[data-revoke=\"{key_id}\"]').textContent") == "Confirm revoke"
    page.eval(f"document.querySelector('[data-revoke=\"{key_id}\"]').click()")
    page.wait(f"!document.querySelector('[data-revoke=\"{key_id}\"]')", "the key to leave the list")
    assert console.chat(key).status_code == 401


def test_overview_shows_live_kv_use_and_queue_and_the_usage_view_its_plots(console: Console, page: Page,
                                                                           tmp_path: Path) -> None:
    made = httpx.post(f"{console.url}/admin/keys", headers=ADMIN, json={"team": "ops", "name": "traffic"}).json()
    assert console.chat(made["key"]).status_code == 200
    _login(page, console, ADMIN_KEY)
    row = page.wait("[...document.querySelectorAll('#backends tr')].find((r) => r.cells[0].textContent === 'gpu'"
                    " && r.cells[6].textContent !== '-')?.textContent", "the engine's polled state")
    assert "42%" in row
    cells = page.eval("[...[...document.querySelectorAll('#backends tr')].find((r) => r.cells[0].textContent === 'gpu')"
                      ".cells].map((c) => c.textContent)")
    assert (cells[1], cells[7], cells[8]) == ("local (openai)", "2", "3")  # a polled engine; running, waiting
    # the last minute: the request above, served by the hosted backend
    page.wait("document.getElementById('now').textContent.includes('served locally')", "the last-minute cards")
    now = wait_until(lambda: (n := httpx.get(f"{console.url}/console/api/now", headers=ADMIN).json())["requests"] and n,
                     "the ledger to hold the request")
    assert now["share_local"] == 0.0 and now["ttft_p50_s"] > 0
    assert page.screenshot(tmp_path / "console-overview.png").startswith(PNG_MAGIC)

    page.eval("document.querySelector('[data-tab=teams]').click()")
    ops = page.wait("[...document.querySelectorAll('#teams tr')].find((r) => r.cells[0].textContent === 'ops')"
                    "?.textContent", "the teams table")
    assert "/ $50.00" in ops  # today's spend against the day budget

    page.eval("document.querySelector('[data-tab=requests]').click()")
    page.wait(f"document.getElementById('requests').textContent.includes({json.dumps(made['key_id'])})",
              "the request in the recent list")

    page.eval("document.querySelector('[data-tab=usage]').click()")
    page.wait("[...document.querySelectorAll('#usage tr')].some((r) => r.cells[0].textContent === 'ops')", "usage rows")
    page.wait("document.querySelectorAll('#u-team option').length === 3", "the team filter")
    for team, shown in (("ops", True), ("free", False)):  # the key is one of team ops'
        page.eval(f"document.getElementById('u-team').value = '{team}'; document.getElementById('u-by').value = 'key';"
                  "document.getElementById('usage-form').requestSubmit()")
        page.wait(f"document.querySelector('#usage th')?.textContent === 'key' && "
                  f"document.getElementById('usage').textContent.includes('{made['key_id']}') === {json.dumps(shown)}",
                  f"team {team}'s per-key rows")
    page.eval("document.getElementById('u-team').value = ''; document.getElementById('u-by').value = 'team'")
    page.eval("document.getElementById('u-plots').click()")
    plots = page.wait("document.getElementById('plots').srcdoc", "the report")
    assert plots.count("<svg") >= 5
    assert page.screenshot(tmp_path / "console-usage.png").startswith(PNG_MAGIC)


def test_a_team_key_gets_403_from_the_admin_calls_and_sees_only_usage(console: Console, page: Page) -> None:
    made = httpx.post(f"{console.url}/admin/keys", headers=ADMIN, json={"team": "free", "name": "team"}).json()
    team = {"authorization": f"Bearer {made['key']}"}
    for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"), (("DELETE", f"/admin/keys/{made['key_id']}")),
                         ("GET", "/console/api/teams"), ("GET", "/console/api/backends"),
                         ("GET", "/console/api/requests"), ("GET", "/console/api/now"), ("GET", "/console/api/policy"),
                         ("POST", "/console/api/explain")):
        refused = httpx.request(method, f"{console.url}{path}", headers=team, json={"team": "free"})
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"]["type"] == "permission_error"
        assert httpx.request(method, f"{console.url}{path}", json={"team": "free"}).status_code == 401
    assert console.chat(made["key"]).status_code == 200  # the DELETE above did nothing

    _login(page, console, made["key"])
    page.wait("document.querySelector('#usage td')", "the usage table")
    assert _visible(page, "#tabs button") == ["Usage"]
    assert page.eval("[...document.querySelectorAll('#usage tr')].slice(1).map((r) => r.cells[0].textContent)") == \
        ["free", "total"]


def test_a_keys_budget_status_counts_its_spend(console: Console) -> None:
    made = httpx.post(f"{console.url}/admin/keys", headers=ADMIN,
                      json={"team": "ops", "budget": {"usd_per_day": 2, "usd_per_month": 30}}).json()
    assert console.chat(made["key"]).status_code == 200
    status = wait_until(lambda: (s := httpx.get(f"{console.url}/admin/keys/{made['key_id']}", headers=ADMIN)
                                 .json()["budget_status"])["day"]["spent_usd"] > 0 and s, "the spend to settle")
    day, month = status["day"], status["month"]
    assert (day["limit_usd"], month["limit_usd"]) == (2, 30)
    assert day["forecast_usd"] >= day["spent_usd"] and month["spent_usd"] >= day["spent_usd"]
    listed = httpx.get(f"{console.url}/admin/keys", headers=ADMIN).json()["data"]
    assert {k["key_id"]: k.get("budget_status") for k in listed}[made["key_id"]]["day"]["limit_usd"] == 2


def test_the_policy_view_explains_a_pasted_request_against_the_live_state(console: Console, page: Page,
                                                                         tmp_path: Path) -> None:
    _login(page, console, ADMIN_KEY)
    page.eval("document.querySelector('[data-tab=policy]').click()")
    page.wait("document.querySelectorAll('#x-team option').length === 2", "the team choices")
    assert "up: m" in _text(page, "aliases")
    page.eval("document.getElementById('x-team').value = 'ops'; document.getElementById('explain-form').requestSubmit()")
    page.wait("document.getElementById('explain-result')", "the explanation")
    shown = _text(page, "explain-result")
    page.screenshot(tmp_path / "console-policy.png")
    assert "up (m)" in shown and "prompt tokens" in shown
    bad = httpx.post(f"{console.url}/console/api/explain", headers=ADMIN,
                     json={"team": "ops", "body": {"model": "nope", "messages": []}})
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "model_not_found"
    assert httpx.post(f"{console.url}/console/api/explain", headers=ADMIN, json={"team": "ops"}).status_code == 400
    assert httpx.post(f"{console.url}/console/api/explain", headers=ADMIN,
                      json={"team": "nobody", "body": {"model": "m"}}).json()["error"]["code"] == "unknown_team"
