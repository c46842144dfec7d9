"""/readyz's body and status (pure parts): what waits for a restart after a reload, what anyone sees
and what only the admin key sees, and the ledger rule for not-ready (how long refusals last: a setting)."""
from __future__ import annotations

from pathlib import Path

from gateway.assembly import Observability, build_observability
from gateway.backends.base import BackendState
from gateway.readiness import Readiness, readiness
from gateway.reload_changes import restart_backends, restart_changes
from gateway.settings import Settings
from observability.ledger import Ledger, LedgerConfig
from observability.spill import SpillFile
from observability.sqlite_store import SqliteStore
from policies.loader import load_policy
from tests.support.procs import wait_until
from tests.unit.observability.conftest import record

POLICY = """\
backends:
  local: {kind: engine, model: smollm2, engine_args: [--max-num-seqs, "8"]}
  hosted: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-one}
models:
  chat:
    deployments: [{backend: local, model: smollm2}, {backend: hosted, model: m}]
rules:
  - {name: first, route: [local, hosted]}
"""


def _policy(text: str):  # type: ignore[no-untyped-def]
    return load_policy(text, "p.yaml", {}).policy


def test_engine_arguments_new_backends_and_keys_need_a_restart_rules_do_not() -> None:
    running = _policy(POLICY)
    assert restart_changes(running, _policy(POLICY.replace("name: first", "name: other"))) == ()
    changed = _policy(POLICY.replace('"8"]', '"16"]').replace("sk-one", "sk-two").replace(
        "models:", "  extra: {kind: openai, base_url: 'http://127.0.0.1:8/v1'}\nmodels:"))
    lines = restart_changes(running, changed)
    assert any(line.startswith("engine local: engine_args changed: ['--max-num-seqs', '8'] → "
                               "['--max-num-seqs', '16']") for line in lines), lines
    assert any(line.startswith("backend hosted: api_key changed;") for line in lines)
    assert not any("sk-two" in line for line in lines)  # a key's value is never shown
    assert any(line.startswith("backend extra: new") for line in lines)
    assert restart_backends(lines) == ["extra", "hosted", "local"]


def test_anyone_sees_states_only_the_admin_sees_errors(tmp_path: Path) -> None:
    ledger = Ledger(SqliteStore(tmp_path / "u.sqlite3"), spill=SpillFile(tmp_path / "spill"),
                    config=LedgerConfig(unready_after_s=0.0))
    ledger.status.failed("OOM for team secret-team")
    parts = Readiness(ledger=ledger, restart_needed=("engine local: engine_args changed: ['a'] → ['b']; ...",))
    backends = {"hosted": BackendState("hosted", "openai", 0, 3, 1, "upstream said: team secret-team over quota")}
    status, public = readiness(True, backends, {}, parts, admin=False)
    assert status == 200 and "secret-team" not in str(public)
    assert public["tasks"]["ledger_writer"]["state"] == "retrying"
    assert public["policy"]["restart_needed"] == ["local"]
    _, detail = readiness(True, backends, {}, parts, admin=True)
    assert "secret-team" in detail["tasks"]["ledger_writer"]["last_error"]
    assert detail["backends"]["hosted"]["last_error"].startswith("upstream said")
    assert "engine_args changed" in detail["policy"]["restart_needed"][0]


def test_a_ledger_that_cannot_write_anywhere_makes_the_replica_not_ready(tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"
    spill_dir.write_text("a file where the spill folder should be")  # every spill append fails
    store = SqliteStore(tmp_path / "u.sqlite3")
    store._conn.execute("PRAGMA query_only = ON")  # and the store refuses
    ledger = Ledger(store, spill=SpillFile(spill_dir), config=LedgerConfig(retry_interval_s=0.01))
    ledger.submit(record(request_id="held"))
    ledger._guarded_drain()  # one writer round, on this thread
    status, body = readiness(True, {"x": BackendState("x", "openai", 0, 0, 0)}, {}, Readiness(ledger=ledger),
                             admin=False)
    assert status == 503 and body["status"] == "not_ready" and body["ledger"]["queued"] == 1
    store._conn.execute("PRAGMA query_only = OFF")
    ledger._next_probe = 0.0
    ledger._guarded_drain()  # the store is back: written straight from memory
    assert readiness(True, {"x": BackendState("x", "openai", 0, 0, 0)}, {}, Readiness(ledger=ledger),
                     admin=False)[0] == 200
    assert [r.request_id for r in store.records(None, 0, 2e9)] == ["held"]


def _refusing_ledger(tmp_path: Path, environ: dict[str, str]) -> tuple[Observability, bool]:
    """The ledger `hybridgw serve` builds from `environ`, its store refusing one record: is it failing?"""
    settings = Settings.from_env({**environ, "HYBRIDGW_DATA_DIR": str(tmp_path)})
    obs = build_observability(settings, _policy(POLICY), {})
    store = obs.ledger.store
    assert isinstance(store, SqliteStore)
    with store._lock:
        store._conn.execute("PRAGMA query_only = ON")  # every write refused, as Redis' OOM or READONLY
    obs.ledger.submit(record(request_id="refused"))
    wait_until(lambda: obs.ledger.status.snapshot().state == "retrying", "the refusal", 30, every_s=0.01)
    return obs, obs.ledger.health().failing


def test_how_long_refusals_last_before_not_ready_is_a_setting(tmp_path: Path) -> None:
    obs, failing = _refusing_ledger(tmp_path / "default", {})
    obs.close()
    assert failing is False  # refused for less than the default 30 s
    obs, failing = _refusing_ledger(tmp_path / "set", {"HYBRIDGW_LEDGER_UNREADY_AFTER_S": "0"})
    obs.close()
    assert failing is True
