"""The Redis ledger across processes: exact totals from two concurrent replicas, replays that never
double-count, and a Redis killed mid-run and restarted without losing a record."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from observability.redis_store import RedisStore
from observability.rollups import NANO, grouped, labelled, merge_fields
from tests.integration.observability.conftest import finish, replica
from tests.integration.observability.replica import T0, TEAMS, replica_record
from tests.support.redis_server import RedisServer


def _expected(names_counts: list[tuple[str, int]]) -> dict[str, Counter[str]]:
    per_team: dict[str, Counter[str]] = {team: Counter() for team in TEAMS}
    for name, count in names_counts:
        for i in range(count):
            r = replica_record(name, i)
            c = per_team[r.team]
            c["requests"] += 1
            c["prompt_tokens"] += r.prompt_tokens
            c["completion_tokens"] += r.completion_tokens
            c["cost_nusd"] += round(r.cost_usd * NANO)
            c[f"backend:{r.backend}"] += 1
            c[f"status:{r.status}"] += 1
    return per_team


def _stored(store: RedisStore, period: str) -> dict[str, Counter[str]]:
    out = {}
    for team in TEAMS:
        fields = merge_fields(r.fields for r in store.rollups(team, period, T0 - 86400, T0 + 2 * 86400))
        c: Counter[str] = Counter({k: int(fields.get(k, 0))
                                   for k in ("requests", "prompt_tokens", "completion_tokens", "cost_nusd")})
        c.update({f"backend:{b}": int(v["requests"]) for b, v in grouped(fields, "backend").items()})
        c.update({f"status:{s}": n for s, n in labelled(fields, "status").items()})
        out[team] = c
    return out


def test_two_replicas_give_exact_totals_and_replays_add_nothing(redis_server: RedisServer, tmp_path: Path) -> None:
    runs = [("replica-a", 1500), ("replica-b", 1500)]
    procs = [replica("ledger", "--redis-url", redis_server.url, "--data-dir", str(tmp_path / name), "--name", name,
                     "--count", str(count), "--threads", "4") for name, count in runs]
    stats = [finish(p) for p in procs]
    assert [s["written"] for s in stats] == [1500, 1500]
    store = RedisStore.from_url(redis_server.url)
    expected = _expected(runs)
    assert _stored(store, "day") == expected
    assert _stored(store, "hour") == expected
    assert sum(len(store.records(team, T0 - 1, T0 + 86400)) for team in TEAMS) == 3000

    # a replica that re-sends everything (e.g. a spill file replayed twice) changes nothing
    again = finish(replica("ledger", "--redis-url", redis_server.url, "--data-dir", str(tmp_path / "again"),
                           "--name", "replica-a", "--count", "1500", "--threads", "2"))
    assert again["written"] == 0
    assert _stored(store, "day") == expected
    store.close()


def _wait_for_progress(proc, at_least: int) -> None:  # type: ignore[no-untyped-def]
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("submitted ") and int(line.split()[1]) >= at_least:
            return
    raise AssertionError(f"replica ended before submitting {at_least} records: {proc.stderr.read()[-3000:]}")


def test_redis_killed_mid_run_loses_no_record(durable_redis_server: RedisServer, tmp_path: Path) -> None:
    proc = replica("ledger", "--redis-url", durable_redis_server.url, "--data-dir", str(tmp_path / "replica"),
                   "--name", "outage", "--count", "1200", "--threads", "2", "--pace-s", "0.002",
                   "--progress-every", "50")
    _wait_for_progress(proc, 300)
    durable_redis_server.kill()  # SIGKILL mid-run; the replica keeps submitting
    _wait_for_progress(proc, 700)
    durable_redis_server.start()  # same port, same append-only file
    stats = finish(proc)
    assert stats["spilled"] > 0, "the outage never reached the ledger; the test proved nothing"
    assert stats["flushed"] is True
    assert not list((tmp_path / "replica" / "spill").glob("spill-*.jsonl"))  # replayed and removed
    store = RedisStore.from_url(durable_redis_server.url)
    assert _stored(store, "day") == _expected([("outage", 1200)])
    assert sum(len(store.records(team, T0 - 1, T0 + 86400)) for team in TEAMS) == 1200
    store.close()
