"""The Redis limiter against a real redis-server whose window key was made the wrong type on purpose
(WRONGTYPE: a bug, not an outage): requests still flow (fail open), the error is logged once with the
script's name, counted in /metrics apart from outages, and /readyz shows the limiter failing open
(the detail with the admin key only); enforcement resumes once the key is sane. A Redis that is
gone is an outage: warned about, counted as such, never logged as a bug."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest
import redis

from gateway.readiness import Readiness, readiness
from observability.limiter_health import register_limiter_metrics
from observability.limits import window, window_key
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_redis import RedisLimiter
from observability.metrics import build_metrics
from observability.redis_clients import team_tag
from tests.support import procs
from tests.support.redis_server import RedisServer

RPM = 50  # too small a window for leases: every request is checked in Redis
CONFIG = LimitsConfig(teams={"alpha": TeamLimits(requests_per_minute=RPM)})
ADMIN_KEY = "sk-admin-limiter-errors-0123456"
PREFIX = "hgw:lim:"


def _break_windows(url: str, team: str) -> None:
    """The team's rpm window of this minute and the next one hold a hash: the reserve script's GET
    on them answers WRONGTYPE."""
    control = redis.Redis.from_url(url)
    now = time.time()
    for moment in (now, now + 60):
        key = f"{PREFIX}{team_tag(team)}:" + window_key("team", team, "requests_per_minute",
                                                       window("requests_per_minute", moment)[0])
        control.delete(key)
        control.hset(key, "not", "a counter")
    control.close()


def _mend_windows(url: str) -> None:
    control = redis.Redis.from_url(url)
    for key in control.scan_iter(f"{PREFIX}*"):
        if control.type(key) != b"string":
            control.delete(key)
    control.close()


def _counted(exposition: str, failure: str, script: str) -> float | None:
    """The value of hybridgw_limiter_failures_total for this failure kind and script, if present."""
    for line in exposition.splitlines():
        if (line.startswith("hybridgw_limiter_failures_total{") and f'hybridgw_limiter_failure="{failure}"' in line
                and f'hybridgw_limiter_script="{script}"' in line):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_wrongtype_window_is_a_bug_logged_once_counted_and_shown(redis_server: RedisServer,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    metrics = build_metrics()

    async def run() -> None:
        limiter = RedisLimiter.from_url(redis_server.url, CONFIG, lease_quota=False)
        register_limiter_metrics(metrics.provider, limiter)
        try:
            assert (await limiter.reserve("r0", "alpha", "k", 1, 0.0)).window_keys  # enforced
            assert limiter.state().failing_open is False
            _break_windows(redis_server.url, "alpha")
            with caplog.at_level(logging.WARNING, logger="observability.limits_redis"):
                held = [await limiter.reserve(f"r{i}", "alpha", "k", 1, 0.0) for i in range(1, 4)]
            assert [h.window_keys for h in held] == [(), (), ()]  # served, nothing charged: fail open
            state = limiter.state()
            assert (state.failing_open, state.reason) == (True, "script_error")
            assert dict(state.script_errors) == {"reserve": 3} and dict(state.outages) == {}
            assert state.last_error is not None and "WRONGTYPE" in state.last_error
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1 and "'reserve'" in errors[0].getMessage(), caplog.text
            assert "limits not enforced, Redis unreachable" not in caplog.text  # not called an outage
            status, public = readiness(True, {}, {}, Readiness(limiter=limiter), admin=False)
            assert public["limiter"] == {"failing_open": True, "since": public["limiter"]["since"]}
            _, detail = readiness(True, {}, {}, Readiness(limiter=limiter), admin=True)
            assert detail["limiter"]["script_errors"] == {"reserve": 3}
            _mend_windows(redis_server.url)
            assert (await limiter.reserve("r9", "alpha", "k", 1, 0.0)).window_keys  # enforced again
            assert limiter.state().failing_open is False
        finally:
            await limiter.aclose()

    asyncio.run(run())
    text = metrics.exposition().decode()
    assert _counted(text, "script_error", "reserve") == 3.0, text


def test_a_redis_that_is_gone_is_an_outage_not_a_bug(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        limiter = RedisLimiter.from_url(redis_server.url, CONFIG, lease_quota=False)
        try:
            assert (await limiter.reserve("r0", "alpha", "k", 1, 0.0)).window_keys
            redis_server.stop()
            with caplog.at_level(logging.WARNING, logger="observability.limits_redis"):
                assert not (await limiter.reserve("r1", "alpha", "k", 1, 0.0)).window_keys  # fail open
            state = limiter.state()
            assert (state.failing_open, state.reason, dict(state.outages)) == (True, "redis_down", {"reserve": 1})
            assert dict(state.script_errors) == {}
            assert "limits not enforced" in caplog.text
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        finally:
            await limiter.aclose()

    asyncio.run(run())


def test_the_gateway_serves_through_a_limiter_bug_and_says_so(redis_server: RedisServer, fake_upstream: str,
                                                              tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(f"""
backends: {{up: {{kind: openai, base_url: "{fake_upstream}/v1", api_key: k}}}}
models: {{m: {{deployments: [{{backend: up, model: m}}]}}}}
teams: {{alpha: {{limits: {{requests_per_minute: {RPM}}}}}}}
""")
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    env = {"HYBRIDGW_DATA_DIR": str(tmp_path / "data"), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-limiter-errors", redis_url=redis_server.url) as (url, proc):
        made = httpx.post(f"{url}/admin/keys", headers=admin, json={"team": "alpha"}, timeout=30)
        assert made.status_code == 201, made.text
        auth = {"authorization": f"Bearer {made.json()['key']}"}

        def chat() -> httpx.Response:
            return httpx.post(f"{url}/v1/chat/completions", headers=auth, timeout=30,
                              json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})

        assert chat().status_code == 200
        _break_windows(redis_server.url, "alpha")
        assert chat().status_code == 200  # served (fail open), not a 500
        ready = httpx.get(f"{url}/readyz", headers=admin, timeout=30)
        assert ready.status_code == 200, ready.text
        limiter = ready.json()["limiter"]
        assert limiter["failing_open"] and limiter["reason"] == "script_error", limiter
        assert limiter["script_errors"] == {"reserve": 1}
        assert set(httpx.get(f"{url}/readyz", timeout=30).json()["limiter"]) == {"failing_open", "since"}
        metrics = httpx.get(f"{url}/metrics", headers=admin, timeout=30).text
        assert _counted(metrics, "script_error", "reserve") == 1.0, metrics[-2000:]
        lines = proc.output().split("\n")[:-1]
        assert sum("limiter script 'reserve' failed" in line for line in lines) == 1, proc.output()[-3000:]
