"""Shadow pairs where the deployment keeps its state: in Redis with REDIS_URL (one list per team, key
`hgw:{team}:shadow`, newest max_pairs kept; the Redis ledger's rollups count the shadow calls apart
from the requests), and nothing lost at shutdown: a shadow call running when
the gateway is stopped finishes and its usage record reaches the ledger."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import httpx
import openai
import orjson
import pytest
import redis

from tests.integration.gateway.conftest import ADMIN_KEY, UPSTREAM_KEY, hybridgw
from tests.support import keys, procs
from tests.support.procs import wait_until
from tests.support.redis_server import RedisServer

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "name a prime"}]


def policy(fake: str, strong_model: str, max_pairs: int = 10, drain_s: float = 10.0) -> str:
    return f"""
health: {{failure_threshold: 1000000}}
shadow_limits: {{drain_s: {drain_s}}}
backends:
  weak: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}}}
  strong: {{kind: openai, base_url: "{fake}/v1", api_key: {UPSTREAM_KEY}}}
models:
  m: {{deployments: [{{backend: weak, model: m}}, {{backend: strong, model: "{strong_model}"}}]}}
teams:
  red: {{shadow: {{share: 1.0, backends: [weak, strong], max_pairs: {max_pairs}}}}}
  blue: {{shadow: {{share: 1.0, backends: [weak, strong]}}}}
"""


def make_key(config: Path, env: dict[str, str], team: str) -> str:
    """A key where the gateway started with `env` looks for it (Redis with REDIS_URL, else its data dir),
    made in this process (tests/support/keys.py), not by a `hybridgw keys` interpreter of its own."""
    return keys.create_key(env["HYBRIDGW_DATA_DIR"], team, config, env.get("REDIS_URL", ""))


def test_pairs_in_redis_per_team_capped(fake_upstream: str, redis_server: RedisServer, tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(policy(fake_upstream, "m;chunks=6", max_pairs=2))
    env = {"HYBRIDGW_DATA_DIR": str(tmp_path / "data"), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY, "REDIS_URL": redis_server.url}
    keys = {team: make_key(config, env, team) for team in ("red", "blue")}
    with procs.gateway(config, env, "gateway-shadow-redis") as (url, _):
        ids = []
        for team, n in (("red", 3), ("blue", 1)):
            with openai.OpenAI(base_url=f"{url}/v1", api_key=keys[team], max_retries=0) as client:
                for _ in range(n):
                    reply = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
                    ids.append(reply.headers["x-hybridgw-request-id"])
                    # one at a time, so "the newest two" is well defined
                    wait_until(lambda: httpx.get(f"{url}/admin/shadow/status", headers=ADMIN).json()["counts"]["stored"]
                               == len(ids), "the pair stored")
        red = httpx.get(f"{url}/admin/shadow/pairs", params={"team": "red"}, headers=ADMIN).json()["data"]

        def usage() -> dict | None:  # the Redis ledger's rollups: 3 requests, 3 shadow calls apart
            body = httpx.get(f"{url}/v1/usage", params={"team": "red", "since": "1h"}, headers=ADMIN).json()
            return body if body.get("shadow", {}).get("calls") == 3 and body["statuses"].get("ok", 0) >= 3 else None

        body = wait_until(usage, "red's requests and shadow calls in the Redis ledger")
        assert body["requests"] == 3 and [(b["backend"], b["requests"], b["shadow_calls"]) for b in body["backends"]] \
            == [("weak", 3, 0), ("strong", 0, 3)]
    assert [p["request_id"] for p in red] == ids[1:3]  # capped at 2, oldest first
    assert red[0]["shadow"]["text"] == "tok0 tok1 tok2 tok3 tok4 tok5 "
    client_ = redis.Redis.from_url(redis_server.url)
    assert client_.llen("hgw:{red}:shadow") == 2 and client_.llen("hgw:{blue}:shadow") == 1
    out = tmp_path / "blue.jsonl"
    subprocess.run(hybridgw("shadow", "export", "--team", "blue", "--out", str(out)), env={**os.environ, **env}, check=True)
    assert [orjson.loads(line)["request_id"] for line in out.read_text().splitlines()] == ids[3:]


@pytest.mark.parametrize(("delay_ms", "drain_s", "status"), [(1500, 10.0, "ok"), (20_000, 0.2, "aborted")])
def test_a_running_shadow_call_survives_shutdown(fake_upstream: str, tmp_path: Path, delay_ms: int, drain_s: float,
                                                 status: str) -> None:
    """Within `drain_s` the call finishes; past it, it is cut and recorded aborted: either way one record."""
    config = tmp_path / "policy.yaml"
    config.write_text(policy(fake_upstream, f"m;body_delay_ms={delay_ms}", drain_s=drain_s))
    data = tmp_path / "data"
    env = {"HYBRIDGW_DATA_DIR": str(data), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    key = make_key(config, env, "red")
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    gw = procs.start(hybridgw("serve", "--config", str(config), "--port", str(port)), env=env, name="gw-shadow-stop")
    try:
        procs.wait_http(f"{url}/healthz", gw)
        with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
            reply = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        request_id = reply.headers["x-hybridgw-request-id"]
        wait_until(lambda: httpx.get(f"{url}/admin/shadow/status", headers=ADMIN).json()["counts"]["sent"] == 1,
                   "the shadow call sent")
    finally:
        assert procs.stop(gw, timeout_s=30) == 0, gw.output()[-3000:]
    with sqlite3.connect(data / "usage.sqlite3") as db:
        rows = db.execute("SELECT body FROM usage_records WHERE request_id = ?", (request_id + ".shadow",)).fetchall()
    assert len(rows) == 1, gw.output()[-3000:]
    record = orjson.loads(rows[0][0])
    assert record["status"] == status and record["tags"]["shadow"] == "true"
    assert "Traceback" not in gw.output()


def test_the_shadow_workers_survive_a_broken_store(fake_upstream: str, tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(policy(fake_upstream, "m;chunks=6"))
    data = tmp_path / "data"
    env = {"HYBRIDGW_DATA_DIR": str(data), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    key = make_key(config, env, "red")
    blocker = data / "shadow_pairs.sqlite"
    blocker.mkdir()  # the store cannot be opened: a directory where its file goes
    with procs.gateway(config, env, "gateway-shadow-broken") as (url, _):
        def status() -> dict:
            return httpx.get(f"{url}/readyz", headers=ADMIN).json()["tasks"]["shadow"]

        with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
            first = client.chat.completions.create(model="m", messages=MESSAGES)
            assert first.choices[0].message.content == "tok0 tok1 tok2 tok3 "
            broken = wait_until(lambda: (lambda s: s if s["state"] == "retrying" else None)(status()), "retrying")
            assert broken["failures"] == 1 and "pair store: OperationalError" in broken["last_error"]
            blocker.rmdir()
            client.chat.completions.create(model="m", messages=MESSAGES)
            wait_until(lambda: status()["state"] == "running", "running again")
        counts = httpx.get(f"{url}/admin/shadow/status", headers=ADMIN).json()["counts"]
        assert (counts["store_failed"], counts["stored"], counts["ok"]) == (1, 1, 2)
        assert len(httpx.get(f"{url}/admin/shadow/pairs", params={"team": "red"}, headers=ADMIN).json()["data"]) == 1


def test_a_full_queue_drops_pairs_and_never_holds_the_client(fake_upstream: str, tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    text = policy(fake_upstream, "m;body_delay_ms=5000", drain_s=0.1)
    config.write_text(text.replace("shadow_limits: {drain_s: 0.1}", "shadow_limits: {drain_s: 0.1, max_in_flight: 1, max_queue: 0}"))
    data = tmp_path / "data"
    env = {"HYBRIDGW_DATA_DIR": str(data), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    key = make_key(config, env, "red")
    with procs.gateway(config, env, "gateway-shadow-full") as (url, proc):
        def counts() -> dict[str, int]:
            return httpx.get(f"{url}/admin/shadow/status", headers=ADMIN).json()["counts"]

        with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
            client.chat.completions.create(model="m", messages=MESSAGES)
            wait_until(lambda: counts()["sent"] == 1, "the first shadow call running")
            for _ in range(2):  # served while the one slot is busy: their pairs are dropped, not queued
                assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
        got = counts()
        assert (got["sampled"], got["sent"], got["dropped"]) == (3, 1, 2)


def test_a_reload_turns_shadowing_on(fake_upstream: str, tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    on = policy(fake_upstream, "m;chunks=6")
    config.write_text(on.replace("share: 1.0, backends: [weak, strong], max_pairs", "share: 0.0, backends: [weak, strong], max_pairs"))
    env = {"HYBRIDGW_DATA_DIR": str(tmp_path / "data"), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    key = make_key(config, env, "red")
    with procs.gateway(config, env, "gateway-shadow-reload") as (url, proc):
        def red_pairs() -> list[dict]:
            return httpx.get(f"{url}/admin/shadow/pairs", params={"team": "red"}, headers=ADMIN).json()["data"]

        with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
            client.chat.completions.create(model="m", messages=MESSAGES)
            config.write_text(on)
            os.kill(proc.pid, signal.SIGHUP)
            wait_until(lambda: httpx.get(f"{url}/readyz").json()["policy"]["reloads"] >= 1, "the reload")
            reply = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
            got = wait_until(red_pairs, "a pair after the reload")
        assert [p["request_id"] for p in got] == [reply.headers["x-hybridgw-request-id"]]
