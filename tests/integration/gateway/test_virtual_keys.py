"""Virtual keys as an operator makes them (admin API and `hybridgw keys`) against `hybridgw serve`:
a key scoped to one alias gets 403 on another and sees only its alias in /v1/models; an expired key
gets 401; a rotated key works through its grace period and not after; a key's own rpm is enforced
by the limiter with OpenAI's x-ratelimit-* headers on every response (remaining down by exactly one
per request, also under concurrency, in-process limiter) and a 429 whose Retry-After equals the
reset; spend and last use show in the listing."""
from __future__ import annotations

import asyncio
import csv
import io
import itertools
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.gateway.conftest import hybridgw
from tests.support import procs
from tests.support.procs import wait_until

ADMIN_KEY = "sk-admin-virtual-keys-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
TEAM_RPM = 1000
TEAM_TPM = 10_000_000
DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def _policy(fake: str) -> str:
    return f"""
backends:
  up: {{kind: openai, base_url: "{fake}/v1", api_key: k, price: {{input_usd_per_mtok: 100, output_usd_per_mtok: 100}}}}
  cheap: {{kind: openai, base_url: "{fake}/v1", api_key: k, price: {{input_usd_per_mtok: 0, output_usd_per_mtok: 0}}}}
models:
  m: {{deployments: [{{backend: up, model: m}}, {{backend: cheap, model: m}}]}}
  big: {{deployments: [{{backend: up, model: m}}]}}
rules:
  - {{name: over-budget-cheap, when: {{over_budget: true}}, route: [cheap]}}
  - {{name: hosted, route: [up]}}
teams:
  ops:
    limits: {{requests_per_minute: {TEAM_RPM}, tokens_per_minute: {TEAM_TPM}}}
    budget: {{usd_per_day: 1000}}
  free: {{}}
"""


@dataclass
class Served:
    url: str
    config: Path
    data_dir: Path
    proc: procs.Proc

    def chat(self, key: str, model: str = "m", **extra: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions",
                          json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra},
                          headers={"authorization": f"Bearer {key}"}, timeout=30)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}/admin/keys{path}", headers=ADMIN, timeout=30, **kwargs)

    def make(self, **body: Any) -> dict[str, Any]:
        made = self.admin("POST", "", json={"team": "ops", **body})
        assert made.status_code == 201, made.text
        return dict(made.json())

    def keys_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(hybridgw("keys", "--data-dir", str(self.data_dir), "--config", str(self.config), *args),
                              capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def served(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("vkeys")
    config = root / "policy.yaml"
    config.write_text(_policy(fake_upstream))
    env = {"HYBRIDGW_DATA_DIR": str(root / "data"), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-vkeys") as (url, proc):
        yield Served(url, config, root / "data", proc)


def _error(response: httpx.Response) -> dict[str, Any]:
    return dict(response.json()["error"])


def test_a_key_scoped_to_one_alias_gets_403_on_another_and_lists_only_its_own(served: Served) -> None:
    key = served.make(models=["m"], name="scoped")["key"]
    assert served.chat(key, "m").status_code == 200
    refused = served.chat(key, "big")
    assert refused.status_code == 403
    assert (_error(refused)["type"], _error(refused)["param"]) == ("permission_error", "model")
    models = httpx.get(f"{served.url}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["m"]
    unscoped = served.make()["key"]
    assert served.chat(unscoped, "big").status_code == 200  # the team may use it; only the scoped key may not


def test_an_expired_key_gets_401(served: Served) -> None:
    made = served.make(name="short")
    assert served.chat(made["key"]).status_code == 200
    changed = served.admin("PATCH", f"/{made['key_id']}", json={"expires_at": time.time() + 2})
    assert changed.status_code == 200 and changed.json()["expires_at"] is not None
    refused = wait_until(lambda: (r := served.chat(made["key"])).status_code == 401 and r, "the key to expire")
    assert _error(refused)["code"] == "expired_api_key" and made["key_id"] in _error(refused)["message"]


def test_a_rotated_key_works_during_its_grace_period_and_not_after(served: Served) -> None:
    made = served.make(name="rotating", models=["m"])
    rotated = served.admin("POST", f"/{made['key_id']}/rotate", json={"grace_period": "6s"})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["key_id"] == made["key_id"] and new["key"] != made["key"] and new["models"] == ["m"]
    assert served.chat(new["key"]).status_code == 200
    assert served.chat(made["key"]).status_code == 200  # within the grace period
    wait_until(lambda: served.chat(made["key"]).status_code == 401, "the grace period to end")
    assert served.chat(new["key"]).status_code == 200


def _limits(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    assert DURATION.match(h["x-ratelimit-reset-requests"]) and DURATION.match(h["x-ratelimit-reset-tokens"])
    return (int(h["x-ratelimit-limit-requests"]), int(h["x-ratelimit-remaining-requests"]),
            int(h["x-ratelimit-remaining-tokens"]))


def test_every_response_reports_the_window_and_remaining_drops_by_one_per_request(served: Served) -> None:
    key = served.make(name="headers")["key"]
    minute = time.time() // 60
    seen = [_limits(served.chat(key)) for _ in range(5)]
    if time.time() // 60 != minute:
        pytest.skip("the requests crossed a minute boundary")  # a new window restarts the count
    assert all(limit == TEAM_RPM for limit, _, _ in seen)
    assert [b[1] - a[1] for a, b in itertools.pairwise(seen)] == [-1] * 4
    assert all(b[2] < a[2] for a, b in itertools.pairwise(seen))
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                           stream=True)
    assert int(raw.headers["x-ratelimit-remaining-requests"]) < TEAM_RPM  # on streams too
    assert float(raw.headers["x-hybridgw-budget-remaining-usd"]) < 1000
    list(raw.parse())


def test_concurrent_requests_each_see_their_own_remaining(served: Served) -> None:
    key = served.make(name="burst")["key"]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            replies = await asyncio.gather(*(client.post(
                f"{served.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                json={"model": "m", "messages": [{"role": "user", "content": f"n{i}"}]}) for i in range(12)))
        return [int(r.headers["x-ratelimit-remaining-requests"]) for r in replies]

    minute = time.time() // 60
    remaining = asyncio.run(burst())
    if time.time() // 60 != minute:
        pytest.skip("the burst crossed a minute boundary")
    top = max(remaining)
    assert sorted(remaining) == list(range(top - 11, top + 1))  # each one charged once, none reported twice


def test_a_keys_own_rpm_is_enforced_and_the_429_retry_after_matches_its_reset(served: Served) -> None:
    made = served.make(name="tight", limits={"requests_per_minute": 2})
    first = served.chat(made["key"])
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "2"
    second = served.chat(made["key"])
    if second.status_code == 200:
        refused = served.chat(made["key"])
    else:  # the minute turned between the two: the first window's count was 1
        refused = second
    if refused.status_code == 200:
        pytest.skip("a minute boundary fell inside the test")
    assert refused.status_code == 429 and _error(refused)["type"] == "rate_limit_error"
    h = refused.headers
    assert h["x-ratelimit-remaining-requests"] == "0" and h["x-ratelimit-limit-requests"] == "2"
    assert h["x-ratelimit-reset-requests"] in (f"{h['retry-after']}s", f"1m{int(h['retry-after']) - 60}s")
    assert served.chat(served.make()["key"]).status_code == 200  # the team's other keys are not held back


def test_a_keys_own_budget_refuses_or_routes_as_its_on_exceed_says(served: Served) -> None:
    strict = served.make(name="broke", budget={"usd_per_day": 0.00001, "on_exceed": "reject"})["key"]
    refused = served.chat(strict)
    assert refused.status_code == 429 and _error(refused)["code"] == "usd_per_day", refused.text
    assert float(refused.headers["x-hybridgw-budget-remaining-usd"]) <= 0.00001
    lenient = served.make(name="thrifty", budget={"usd_per_day": 0.00001, "on_exceed": "route"})["key"]
    routed = served.chat(lenient)  # the team's own on_exceed is reject: the key's wins for the key's budget
    assert routed.status_code == 200 and routed.headers["x-hybridgw-backend"] == "cheap"
    assert served.chat(served.make()["key"]).headers["x-hybridgw-backend"] == "up"


def test_listing_shows_spend_and_last_use_and_bad_bodies_are_400s(served: Served) -> None:
    made = served.make(name="spender", tags={"project": "apollo"}, metadata={"owner": "ana"})
    for _ in range(3):
        assert served.chat(made["key"]).status_code == 200
    info = wait_until(lambda: (r := served.admin("GET", f"/{made['key_id']}").json())["requests"] >= 3 and r,
                      "the ledger to record the key's use")
    assert info["spend_usd"] > 0 and info["last_used_at"] is not None and info["tags"] == {"project": "apollo"}
    listed = served.admin("GET", "").json()["data"]
    assert any(row["key_id"] == made["key_id"] and row["spend_usd"] > 0 for row in listed)
    assert all("key" not in row and "key_hash" not in row for row in listed)
    assert served.admin("POST", "", json={"team": "free", "name": "other"}).status_code == 201
    only = served.admin("GET", "", params={"team": "free"}).json()["data"]
    assert only and {row["team"] for row in only} == {"free"}
    for body, param in (({"models": "m"}, "models"), ({"models": ["nope"]}, "models"),
                        ({"duration": "soon"}, "duration"), ({"limits": {"requests_per_minute": 0}}, None)):
        bad = served.admin("POST", "", json={"team": "ops", **body})
        assert bad.status_code == 400 and _error(bad)["type"] == "invalid_request_error", bad.text
        if param:
            assert _error(bad)["param"] == param
    assert served.admin("PATCH", "/nosuchid", json={"name": "x"}).status_code == 404
    assert httpx.get(f"{served.url}/admin/keys", headers={"authorization": f"Bearer {made['key']}"},
                     timeout=30).status_code == 403  # a team's key is not the admin key


def test_the_cli_makes_updates_rotates_and_lists_virtual_keys(served: Served) -> None:
    made = served.keys_cli("create", "--team", "ops", "--name", "cli", "--model", "m", "--rpm", "50",
                           "--usd-per-day", "2", "--tag", "env=ci", "--expires", "30d")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    key_id = key.split("-")[2]
    assert served.chat(key, "big").status_code == 403
    assert served.chat(key, "m").headers["x-ratelimit-limit-requests"] == "50"  # tighter than the team's
    assert served.keys_cli("update", key_id, "--all-models").returncode == 0
    # the gateway remembers a key for its cache's TTL (~1 s): a change from the CLI applies within it
    wait_until(lambda: served.chat(key, "big").status_code == 200, "the CLI's update to apply")
    rotated = served.keys_cli("rotate", key_id)
    assert rotated.returncode == 0, rotated.stderr
    assert served.chat(rotated.stdout.strip()).status_code == 200
    wait_until(lambda: served.chat(key).status_code == 401, "the rotated-out key to be refused")
    listing = served.keys_cli("list").stdout
    assert key_id in listing and "cli" in listing
    bad = served.keys_cli("create", "--team", "ops", "--model", "nope")
    assert bad.returncode == 2 and "'nope'" in bad.stderr and bad.stdout == ""


def _usage(served: Served, key: str, **params: str) -> httpx.Response:
    return httpx.get(f"{served.url}/v1/usage", params={"since": "1h", **params},
                     headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_chargeback_rows_per_team_key_and_tag_sum_to_the_totals(served: Served) -> None:
    ops = served.make(name="charged", tags={"project": "zeus"})
    free = served.admin("POST", "", json={"team": "free"}).json()
    for key in (ops["key"], ops["key"], free["key"]):
        assert served.chat(key).status_code == 200
    wait_until(lambda: {(ops["key_id"], 2), (free["key_id"], 1)} <= {(r["name"], r["requests"]) for r in
                                                                   _usage(served, ADMIN_KEY, by="key").json()["rows"]},
               "the ledger to record the requests")
    overall = _usage(served, ADMIN_KEY).json()
    teams = _usage(served, ADMIN_KEY, by="team").json()
    assert {r["name"] for r in teams["rows"]} == {"ops", "free"}
    assert teams["total"]["requests"] == overall["requests"]
    table = list(csv.DictReader(io.StringIO(_usage(served, ADMIN_KEY, by="team", format="csv").text)))
    assert sum(int(r["requests"]) for r in table) == overall["requests"]
    assert sum(float(r["cost_usd"]) for r in table) == pytest.approx(overall["cost_usd"])
    ops_row = next(r for r in table if r["name"] == "ops")
    assert float(ops_row["budget_day_limit_usd"]) == 1000 and float(ops_row["budget_day_spent_usd"]) > 0
    assert float(ops_row["all_hosted_usd"]) > 0 and "up/m" in ops_row["price_used"]
    tags = _usage(served, ADMIN_KEY, by="tag").json()["rows"]
    assert any(r["name"] == "project=zeus" and r["requests"] == 2 for r in tags)
    # a team's key sees its own team's keys only, and no other team
    mine = _usage(served, ops["key"], by="key").json()["rows"]
    assert ops["key_id"] in {r["name"] for r in mine} and free["key_id"] not in {r["name"] for r in mine}
    assert _usage(served, ops["key"], by="team", team="free").status_code == 403
    assert _usage(served, ADMIN_KEY, by="model").status_code == 400
    report = subprocess.run(hybridgw("report", "--by", "team", "--since", "1h", "--format", "csv",
                                     "--data-dir", str(served.data_dir), "--config", str(served.config)),
                            capture_output=True, text=True, timeout=120, check=False)
    assert report.returncode == 0, report.stderr
    cli_rows = list(csv.DictReader(io.StringIO(report.stdout)))
    assert {r["name"] for r in cli_rows} == {"ops", "free"}
    assert sum(int(r["requests"]) for r in cli_rows) >= overall["requests"]
