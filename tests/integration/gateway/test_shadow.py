"""Shadow traffic (issue #16 item 5): a real gateway, the fake upstream behind three backends (weak,
strong, broken), the official SDK as the client. A sampled request's client is served as before; the
pair's other backend answers in the background, its spend is in the ledger (tagged shadow) and the
pair of answers is kept, readable by the admin only."""
from __future__ import annotations

import csv
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.gateway.conftest import ADMIN_KEY, UPSTREAM_KEY, Gateway, create_key, hybridgw
from tests.support import procs
from tests.support.procs import wait_until

WEAK_TEXT, STRONG_TEXT = "tok0 tok1 tok2 tok3 ", "tok0 tok1 tok2 tok3 tok4 tok5 tok6 "
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "what is the capital of France?"}]


def policy(fake: str) -> str:
    return f"""
health: {{failure_threshold: 1000000}}
backends:
  weak: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}, price: {{input_usd_per_mtok: 1, output_usd_per_mtok: 2}}}}
  strong: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}, price: {{input_usd_per_mtok: 10, output_usd_per_mtok: 30}}}}
  broken: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}}}
  pricey: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}, price: {{input_usd_per_mtok: 10, output_usd_per_mtok: 1000}}}}
models:
  m: {{deployments: [{{backend: weak, model: m}}, {{backend: strong, model: "m;chunks=7"}}]}}
  solo: {{deployments: [{{backend: weak, model: m}}]}}
  fails: {{deployments: [{{backend: weak, model: m}}, {{backend: broken, model: "m;status=500;message=shadow down"}}]}}
  costly: {{deployments: [{{backend: weak, model: m}}, {{backend: pricey, model: "m;status=500;message=shadow down"}}]}}
teams:
  red: {{shadow: {{share: 1.0, backends: [weak, strong], models: {{strong: "m;chunks=5"}}}}}}
  green: {{shadow: {{share: 0.0, backends: [weak, strong]}}}}
  blue: {{}}
  purple: {{shadow: {{share: 1.0, backends: [weak, broken]}}, allowed_backends: [weak, broken]}}
  teal: {{shadow: {{share: 1.0, backends: [weak, strong]}}}}
  olive: {{shadow: {{share: 1.0, backends: [weak, pricey]}}, budget: {{usd_per_day: 0.01}}}}
"""


@pytest.fixture(scope="module")
def gw(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("shadow")
    data, config = root / "data", root / "policy.yaml"
    config.write_text(policy(fake_upstream))
    keys = {team: create_key(data, team, config) for team in ("red", "green", "blue", "purple", "teal")}
    env = {"HYBRIDGW_DATA_DIR": str(data), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-shadow") as (url, proc):
        yield Gateway(url, fake_upstream, data, keys, proc, env, config)


def pairs(gw: Gateway, team: str, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return httpx.get(f"{gw.url}/admin/shadow/pairs", params={"team": team}, headers=headers)


def counts(gw: Gateway) -> dict[str, int]:
    return httpx.get(f"{gw.url}/admin/shadow/status", headers=ADMIN).json()["counts"]


def stored(gw: Gateway, team: str, n: int) -> list[dict[str, Any]]:
    return wait_until(lambda: (lambda d: d if len(d) >= n else None)(pairs(gw, team).json()["data"]),
                      f"{n} pairs of {team}")


def test_sampled_requests_keep_both_answers(gw: Gateway) -> None:
    with gw.client("red") as client:
        plain = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        streamed = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        streamed_text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert plain.parse().choices[0].message.content == WEAK_TEXT  # the client is served by weak, as before
    assert plain.headers["x-hybridgw-backend"] == "weak" and streamed_text == WEAK_TEXT
    got = [p for p in stored(gw, "red", 2) if p["model_alias"] == "m"]
    assert len(got) == 2
    by_id = {p["request_id"]: p for p in got}
    first = by_id[plain.headers["x-hybridgw-request-id"]]
    for pair in got:
        assert pair["messages"] == MESSAGES and pair["team"] == "red" and pair["backends"] == ["weak", "strong"]
        assert (pair["served"]["backend"], pair["served"]["text"]) == ("weak", WEAK_TEXT)
        assert (pair["shadow"]["backend"], pair["shadow"]["text"]) == ("strong", STRONG_TEXT)
        assert pair["shadow"]["completion_tokens"] == 7 and pair["served"]["completion_tokens"] == 4
    assert first["stream"] is False and sorted(p["stream"] for p in got) == [False, True]
    # the shadow call is the team's spend, in the ledger, told apart by its tag and id
    record = gw.record_for(first["request_id"] + ".shadow")
    assert record["team"] == "red" and record["backend"] == "strong" and record["tags"]["shadow"] == "true"
    assert record["rule"] == "shadow" and record["status"] == "ok" and record["completion_tokens"] == 7
    assert record["cost_usd"] == pytest.approx((record["prompt_tokens"] * 10 + 7 * 30) / 1e6)
    served = gw.record_for(first["request_id"])
    assert served["backend"] == "weak" and "shadow" not in served["tags"]


def test_an_alias_on_one_backend_uses_the_shadow_model_named(gw: Gateway) -> None:
    with gw.client("red") as client:
        reply = client.chat.completions.with_raw_response.create(model="solo", messages=MESSAGES)
    request_id = reply.headers["x-hybridgw-request-id"]
    pair = wait_until(lambda: [p for p in pairs(gw, "red").json()["data"] if p["request_id"] == request_id],
                      "the pair of the solo request")[0]
    assert (pair["shadow"]["model"], pair["shadow"]["text"]) == ("m;chunks=5", "tok0 tok1 tok2 tok3 tok4 ")
    assert pair["model_alias"] == "solo"


def test_share_zero_and_no_shadow_do_nothing(gw: Gateway) -> None:
    before = counts(gw)
    for team in ("green", "blue"):
        with gw.client(team) as client:
            for _ in range(3):
                assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == WEAK_TEXT
    assert counts(gw)["sampled"] == before["sampled"]
    assert pairs(gw, "green").json()["data"] == [] and pairs(gw, "blue").json()["data"] == []


def test_failing_shadow_leaves_the_client_alone(gw: Gateway) -> None:
    before = counts(gw)
    with gw.client("purple") as client:
        reply = client.chat.completions.with_raw_response.create(model="fails", messages=MESSAGES)
    assert reply.parse().choices[0].message.content == WEAK_TEXT
    request_id = reply.headers["x-hybridgw-request-id"]
    wait_until(lambda: counts(gw)["failed"] == before["failed"] + 1, "the shadow failure counted")
    shadow = gw.record_for(request_id + ".shadow")
    assert shadow["status"] == "error" and shadow["backend"] == "broken" and shadow["cost_usd"] == 0
    assert shadow["completion_tokens"] == 0 and shadow["tags"]["shadow_of"] == request_id
    # Its access line (made on the log thread, as a client request's): the record and the call's error.
    line = wait_until(lambda: next((x for x in _lines(gw) if x.get("request_id") == request_id + ".shadow"), None),
                      "the shadow's access line")
    assert line["rule"] == "shadow" and line["backend"] == "broken" and line["error"] and "itl_gaps_s" not in line
    served = gw.record_for(request_id)
    assert (served["status"], served["backend"], served["completion_tokens"]) == ("ok", "weak", 4)
    assert pairs(gw, "purple").json()["data"] == []  # no pair without the second answer
    ready = httpx.get(f"{gw.url}/readyz", headers=ADMIN).json()
    assert ready["tasks"]["shadow"]["state"] in ("running", "retrying")  # reported, and alive
    metrics = httpx.get(f"{gw.url}/metrics", headers=ADMIN).text
    failed = re.search(r'^hybridgw_shadow_requests_total\{[^}]*outcome="failed"[^}]*\} (\S+)$', metrics, re.M)
    assert failed is not None and float(failed.group(1)) == before["failed"] + 1
    # The failure is news of the backend the shadow called (broken), not of the one that served (weak).
    health = {row["name"]: row for row in httpx.get(f"{gw.url}/console/api/backends", headers=ADMIN).json()["data"]}
    assert health["broken"]["consecutive_failures"] >= 1 and health["weak"]["consecutive_failures"] == 0


def test_reports_count_the_requests_once_and_the_shadow_spend_apart(gw: Gateway) -> None:
    """Every request of teal is shadowed: /v1/usage and `hybridgw report` show N requests, not 2N, all
    served by weak; the strong calls' spend is in the cost and in the shadow block, not in the traffic."""
    n = 4
    with gw.client("teal") as client:
        ids = [client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
               .headers["x-hybridgw-request-id"] for _ in range(n)]

    def usage() -> dict[str, Any] | None:
        body = httpx.get(f"{gw.url}/v1/usage", params={"since": "1h"}, headers=gw.auth("teal")).json()
        return body if body.get("shadow", {}).get("calls") == n and body["statuses"].get("ok", 0) >= n else None

    body = wait_until(usage, f"{n} requests and {n} shadow calls of teal in the ledger")
    served = [gw.record_for(i) for i in ids]
    shadow = [gw.record_for(i + ".shadow") for i in ids]
    assert body["requests"] == n and body["statuses"] == {"ok": n}
    assert body["completion_tokens"] == 4 * n and body["prompt_tokens"] == sum(r["prompt_tokens"] for r in served)
    lines = {b["backend"]: b for b in body["backends"]}
    assert (lines["weak"]["requests"], lines["weak"]["share"], lines["weak"]["shadow_calls"]) == (n, 1.0, 0)
    assert (lines["strong"]["requests"], lines["strong"]["share"], lines["strong"]["shadow_calls"]) == (0, 0.0, n)
    shadow_usd, served_usd = sum(r["cost_usd"] for r in shadow), sum(r["cost_usd"] for r in served)
    assert body["shadow"]["cost_usd"] == pytest.approx(shadow_usd) and shadow_usd > 0
    assert body["shadow"]["completion_tokens"] == 7 * n
    assert body["cost_usd"] == pytest.approx(served_usd + shadow_usd)  # the team paid for both
    assert body["served_cost_usd"] == pytest.approx(served_usd)
    assert body["e2e"]["count"] == n and body["ttft"]["count"] == n
    assert sum(map(sum, body["isl_osl"])) == n
    admin = httpx.get(f"{gw.url}/v1/usage", params={"since": "1h"}, headers=ADMIN).json()
    teal = next(t for t in admin["teams"] if t["team"] == "teal")
    assert (teal["requests"], teal["shadow_calls"]) == (n, n)
    assert teal["shadow_cost_usd"] == pytest.approx(shadow_usd)
    out = subprocess.run(hybridgw("report", "--team", "teal", "--since", "1h", "--format", "json", "--no-hosted-price"),
                         env={**_env(), **gw.env}, capture_output=True, text=True, check=True)
    report = orjson.loads(out.stdout)
    assert (report["requests"], report["shadow"]["calls"]) == (n, n)
    table = subprocess.run(hybridgw("report", "--team", "teal", "--since", "1h", "--no-hosted-price"),
                           env={**_env(), **gw.env}, capture_output=True, text=True, check=True).stdout
    assert f"requests    {n:>12}" in table and f"({n} shadow calls" in table


def test_pairs_are_for_the_admin_only(gw: Gateway, tmp_path: Path) -> None:
    with gw.client("red") as client:
        client.chat.completions.create(model="m", messages=MESSAGES)
    stored(gw, "red", 1)
    for headers in (gw.auth("red"), gw.auth("blue")):
        refused = pairs(gw, "red", headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_key_required"
    assert pairs(gw, "red", {}).status_code == 401
    assert httpx.get(f"{gw.url}/admin/shadow/pairs", headers=ADMIN).status_code == 400
    out = tmp_path / "pairs.jsonl"
    env = {**gw.env}
    subprocess.run(hybridgw("shadow", "export", "--team", "red", "--out", str(out)), env={**_env(), **env}, check=True)
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert lines == pairs(gw, "red").json()["data"] and all(p["team"] == "red" for p in lines)
    table = tmp_path / "pairs.csv"
    subprocess.run(hybridgw("shadow", "export", "--team", "red", "--out", str(table)), env={**_env(), **env}, check=True)
    rows = list(csv.reader(table.open()))
    assert rows[0][:5] == ["prompt", "weak", "strong", "weak_answer", "strong_answer"]
    assert [row[0] for row in rows[1:]] == [MESSAGES[0]["content"]] * len(lines)
    assert [row[3:6] for row in rows[1:]] == [[p["served"]["text"], p["shadow"]["text"], p["request_id"]] for p in lines]


def test_a_shadow_the_team_may_not_use_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(policy("http://127.0.0.1:9").replace("allowed_backends: [weak, broken]",
                                                           "allowed_backends: [weak]"))
    out = subprocess.run(hybridgw("policy", "check", str(config)), capture_output=True, text=True, env=_env())
    assert out.returncode != 0
    assert "shadow.backends names 'broken', which the team's allowed_backends (weak) forbid" in out.stdout + out.stderr


def test_an_open_circuit_stops_shadow_calls_to_it(fake_upstream: str, tmp_path: Path) -> None:
    """Shadow failures count against the backend called; once its circuit opens (2 failures here) a shadow
    call is not made, as a client's request would skip it: counted `unhealthy`, no record, no spend."""
    config, data = tmp_path / "policy.yaml", tmp_path / "data"
    config.write_text(policy(fake_upstream).replace("health: {failure_threshold: 1000000}",
                                                    "health: {failure_threshold: 2, cooldown_s: 600}"))
    key = create_key(data, "purple", config)
    env = {"HYBRIDGW_DATA_DIR": str(data), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-shadow-circuit") as (url, proc):
        gw = Gateway(url, fake_upstream, data, {"purple": key}, proc, env, config)
        outcomes = []
        with gw.client("purple") as client:
            for i in range(4):
                before = counts(gw)
                reply = client.chat.completions.with_raw_response.create(model="fails", messages=MESSAGES)
                assert reply.headers["x-hybridgw-backend"] == "weak"  # the client is served all along
                done = wait_until(lambda b=before: (lambda c: c if c["failed"] + c["unhealthy"] > b["failed"]
                                                    + b["unhealthy"] else None)(counts(gw)), f"shadow {i}'s outcome")
                outcomes.append("failed" if done["failed"] > before["failed"] else "unhealthy")
        assert outcomes == ["failed", "failed", "unhealthy", "unhealthy"]
        assert counts(gw)["sent"] == 2
        health = {r["name"]: r for r in httpx.get(f"{url}/console/api/backends", headers=ADMIN).json()["data"]}
        assert health["broken"]["circuit"] == "open" and health["weak"]["circuit"] == "closed"


def _circuit(url: str, backend: str) -> str:
    rows = httpx.get(f"{url}/console/api/backends", headers=ADMIN).json()["data"]
    return next(r["circuit"] for r in rows if r["name"] == backend)


def test_a_shadow_call_over_the_team_s_budget_leaves_a_half_open_circuit_its_probe(fake_upstream: str,
                                                                                   tmp_path: Path) -> None:
    """The half-open probe a shadow call claimed is given back when the team's limits refuse the call: it
    was kept, and the backend read as open to every client until probe_timeout_s."""
    config, data = tmp_path / "policy.yaml", tmp_path / "data"
    config.write_text(policy(fake_upstream).replace(
        "health: {failure_threshold: 1000000}", "health: {failure_threshold: 1, cooldown_s: 0.5, probe_timeout_s: 600}"))
    key = create_key(data, "olive", config)
    env = {"HYBRIDGW_DATA_DIR": str(data), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-shadow-budget") as (url, proc):
        gw = Gateway(url, fake_upstream, data, {"olive": key}, proc, env, config)
        with gw.client("olive") as client:
            # max_tokens 1: the shadow's estimate (~$0.001 at pricey) fits the budget; it fails: the circuit opens
            client.chat.completions.create(model="costly", messages=MESSAGES, max_tokens=1)
            wait_until(lambda: counts(gw)["failed"] == 1, "the first shadow call failed")
            wait_until(lambda: _circuit(url, "pricey") == "half_open", "the cooldown over")
            # max_tokens 1000: ~$1 at pricey, over the $0.01 a day; the client's own call (weak) fits
            reply = client.chat.completions.with_raw_response.create(model="costly", messages=MESSAGES,
                                                                     max_tokens=1000)
            assert reply.headers["x-hybridgw-backend"] == "weak"
        wait_until(lambda: counts(gw)["dropped"] == 1, "the second shadow call dropped")
        assert _circuit(url, "pricey") == "half_open"  # the probe is still there for the next call to take
        assert counts(gw)["sent"] == 1


def _lines(gw: Gateway) -> list[dict[str, Any]]:
    """The gateway's JSON log lines so far (whole lines only)."""
    out = []
    for text in gw.proc.output().split("\n")[:-1]:
        try:
            line = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if isinstance(line, dict):
            out.append(line)
    return out


def _env() -> dict[str, str]:
    return dict(os.environ)
