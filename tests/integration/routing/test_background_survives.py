"""Background work under `hybridgw serve` survives real failures and says so in /readyz: a real
redis-server made to refuse the ledger's writes (OOM via maxmemory, READONLY via REPLICAOF, NOSCRIPT
via SCRIPT FLUSH) — requests keep being served, records wait on disk and reach Redis once it
recovers; hostile policy files (recursive anchors, an alias bomb, a control character) are refused
while the gateway keeps serving and a later valid edit still applies."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from observability.redis_store import RedisStore
from observability.rollups import merge_fields
from tests.integration.routing.conftest import Fake, Gateway, serving, wait_until
from tests.support.redis_server import RedisServer, free_port, redis_server_path

ADMIN = "admin-key-for-readyz-tests"
UNREADY_AFTER_S = 2  # HYBRIDGW_LEDGER_UNREADY_AFTER_S: refusals this long make /readyz 503 (default 30)


def _policy(fake: str, rule: str = "to-hosted", extra_backend: str = "") -> str:
    return f"""version: 1
backends:
  hosted: {{kind: openai, base_url: "{fake}/v1", api_key: upstream-key}}
{extra_backend}models:
  chat:
    deployments: [{{backend: hosted, model: m}}]
teams:
  red: {{limits: {{requests_per_minute: 100000, tokens_per_minute: 100000000}}}}
rules:
  - name: {rule}
    route: [hosted]
"""


def _readyz(gw: Gateway, admin: bool = False) -> tuple[int, dict[str, Any]]:
    headers = {"authorization": f"Bearer {ADMIN}"} if admin else {}
    r = httpx.get(f"{gw.url}/readyz", headers=headers, timeout=10)
    return r.status_code, r.json()


def _served(gw: Gateway, n: int) -> None:
    for _ in range(n):
        r = gw.chat("chat")
        assert r.status == 200, r  # never a 500: the limiter fails open on Redis error replies


def _stored(url: str) -> int:
    store = RedisStore.from_url(url)
    try:
        return int(merge_fields(r.fields for r in store.rollups("red", "day", 0, 4e9)).get("requests", 0))
    finally:
        store.close()


def _writer(gw: Gateway) -> dict[str, Any]:
    return _readyz(gw, admin=True)[1]["tasks"]["ledger_writer"]


@pytest.fixture
def redis_gw(fake: Fake, tmp_path: Path) -> Iterator[tuple[Gateway, RedisServer]]:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    server = RedisServer(workdir=tmp_path).start()
    try:
        env = {"REDIS_URL": server.url, "HYBRIDGW_ADMIN_KEY": ADMIN,
               "HYBRIDGW_LEDGER_UNREADY_AFTER_S": str(UNREADY_AFTER_S)}
        with serving(tmp_path, _policy(fake.url), env=env) as gw:
            yield gw, server
    finally:
        server.stop()


def _refusal_survived(gw: Gateway, url: str, words: tuple[str, ...], before: int, n: int) -> None:
    """While Redis refuses: served, spilled to disk, reported (error text for the admin only)."""
    _served(gw, n)
    wait_until(lambda: _writer(gw)["state"] == "retrying" and any(w in str(_writer(gw)["last_error"]) for w in words),
               f"the ledger writer reports {words}", 60)
    status, public = _readyz(gw)
    assert public["tasks"]["ledger_writer"]["state"] == "retrying" and "last_error" not in str(public)
    assert status in (200, 503)  # 503 only once refusals last UNREADY_AFTER_S
    wait_until(lambda: list((gw.data_dir / "spill").glob("spill-*.jsonl")), "records spilled to disk", 30)
    assert _stored(url) == before


def _recovered(gw: Gateway, url: str, total: int) -> None:
    wait_until(lambda: _stored(url) == total, f"all {total} records in Redis after it recovered", 90, every_s=0.5)
    wait_until(lambda: _writer(gw)["state"] == "running", "the ledger writer running again", 60)
    status, body = _readyz(gw)
    assert status == 200 and body["ledger"]["spill_pending"] is False and body["ledger"]["dead_lettered"] == 0


def test_the_ledger_survives_redis_refusing_writes_and_loses_nothing(redis_gw: tuple[Gateway, RedisServer]) -> None:
    gw, server = redis_gw
    control = redis.Redis.from_url(server.url)
    _served(gw, 3)
    wait_until(lambda: _stored(server.url) == 3, "the first records in Redis", 60)

    control.config_set("maxmemory-policy", "noeviction")
    control.config_set("maxmemory", "1")  # every write now fails with OOM
    _refusal_survived(gw, server.url, ("maxmemory", "OOM"), before=3, n=4)
    # refused for UNREADY_AFTER_S in a row: this replica asks for no traffic
    wait_until(lambda: _readyz(gw)[0] == 503, "/readyz 503 while Redis keeps refusing", 120, every_s=0.2)
    assert _readyz(gw)[1]["ledger"]["failing"] is True
    _served(gw, 1)  # still served: readiness is advice to the load balancer
    control.config_set("maxmemory", "0")
    _recovered(gw, server.url, 8)

    control.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a failover left us on a replica
    _refusal_survived(gw, server.url, ("read only", "READONLY"), before=8, n=3)
    control.execute_command("REPLICAOF", "NO", "ONE")
    _recovered(gw, server.url, 11)

    control.script_flush()  # NOSCRIPT for the cached write script: reloaded, nothing lost
    _served(gw, 2)
    wait_until(lambda: _stored(server.url) == 13, "records written after SCRIPT FLUSH", 60)
    assert "Traceback" not in gw.log()
    control.close()


@pytest.fixture(scope="module")
def plain(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with serving(tmp_path_factory.mktemp("plain"), _policy(fake.url), env={"HYBRIDGW_ADMIN_KEY": ADMIN},
                 unset=("REDIS_URL",)) as gw:
        yield gw


@pytest.fixture
def plain_gw(plain: Gateway, fake: Fake) -> Gateway:
    """The module's gateway back on the policy it started with (a test before may have edited it)."""
    assert plain.config is not None
    plain.config.write_text(_policy(fake.url))
    wait_until(lambda: not _readyz(plain)[1]["policy"]["restart_needed"] and plain.chat("chat").rule == "to-hosted",
               "the start-up policy in force", 60, every_s=0.2)
    return plain


LAUGHS = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")
)


def _refused(gw: Gateway, text: str, error: str) -> None:
    assert gw.config is not None
    before = gw.log().count("policy reload refused")
    gw.config.write_text(text)
    wait_until(lambda: gw.log().count("policy reload refused") > before, "the hostile file was read", 60)
    _, body = _readyz(gw, admin=True)
    assert error in str(body["policy"]["last_reload_error"])
    _, public = _readyz(gw)
    assert public["policy"]["last_reload_refused"] is True and "last_reload_error" not in public["policy"]
    assert public["tasks"]["policy_reload"]["state"] == "running"  # the watcher lives on
    assert gw.chat("chat").rule == "to-hosted"  # the old policy keeps serving


def test_hostile_policy_files_are_refused_and_a_later_edit_applies(plain_gw: Gateway, fake: Fake) -> None:
    gw = plain_gw
    version = _readyz(gw)[1]["policy"]["version"]
    assert version and gw.chat("chat").rule == "to-hosted"
    _refused(gw, _policy(fake.url).replace("rules:", "rules:\x07"), "special characters are not allowed")
    _refused(gw, "a: &a [*a, *a]\n" + _policy(fake.url), "an anchor refers to itself")
    _refused(gw, LAUGHS, "values once aliases are expanded")
    _refused(gw, _policy(fake.url, rule='"caf\u20ac"'), "cannot go into an HTTP header")

    gw.config.write_text(_policy(fake.url, rule="after-the-storm"))  # type: ignore[union-attr]
    wait_until(lambda: gw.chat("chat").rule == "after-the-storm", "the valid edit in force", 60, every_s=0.2)
    _, body = _readyz(gw)
    assert body["policy"]["version"] != version and body["policy"]["last_reload_refused"] is False


def test_a_reload_that_only_a_restart_can_apply_says_so(plain_gw: Gateway, fake: Fake) -> None:
    gw = plain_gw
    assert _readyz(gw)[1]["policy"]["restart_needed"] == []
    extra = f'  extra: {{kind: openai, base_url: "{fake.url}/v1", api_key: other-key}}\n'
    gw.config.write_text(_policy(fake.url, rule="with-extra", extra_backend=extra)  # type: ignore[union-attr]
                         .replace("api_key: upstream-key", "api_key: rotated-key"))
    wait_until(lambda: _readyz(gw)[1]["policy"]["restart_needed"] == ["extra", "hosted"],
               "restart_needed in /readyz", 60)
    lines = _readyz(gw, admin=True)[1]["policy"]["restart_needed"]
    assert any(line.startswith("backend extra: new") for line in lines)
    assert any(line.startswith("backend hosted: api_key changed") for line in lines)
    assert "rotated-key" not in str(lines)
    assert "policy reload: restart needed: backend hosted: api_key changed" in gw.log()
    assert gw.chat("chat").rule == "with-extra"  # the rest of the reload applied


def _spilled_lines(data_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (data_dir / "spill").glob("spill-*.jsonl"))


def test_records_spilled_at_shutdown_reach_redis_after_a_restart(fake: Fake, tmp_path: Path) -> None:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    server = RedisServer(workdir=tmp_path).start()
    control = redis.Redis.from_url(server.url)
    env = {"REDIS_URL": server.url, "HYBRIDGW_ADMIN_KEY": ADMIN}
    try:
        with serving(tmp_path, _policy(fake.url), env=env) as gw:  # its key is stored before Redis fills
            control.config_set("maxmemory-policy", "noeviction")
            control.config_set("maxmemory", "1")
            _served(gw, 5)
            data_dir = gw.data_dir
        # stopped while Redis refused every write: nothing dropped, all on disk, and it said so
        assert _spilled_lines(data_dir) == 5 and _stored(server.url) == 0
        control.config_set("maxmemory", "0")
        with serving(tmp_path, _policy(fake.url), env=env) as gw:
            wait_until(lambda: _stored(server.url) == 5, "the spilled records replayed by the next gateway", 90)
            wait_until(lambda: _spilled_lines(data_dir) == 0, "the spill file removed", 30)
    finally:
        control.close()
        server.stop()
