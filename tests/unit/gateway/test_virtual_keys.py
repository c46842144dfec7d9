"""Virtual keys in the SQLite store and their pure parts: a key's spec survives the store, a rotated
key's old secret works for its grace period and not after, revocation ends the grace too, spend and
last use add up, an old key file opens; bodies update only the fields they name."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.auth import KeyInfo, check_key_alias, check_key_live, hash_key
from gateway.errors import AuthError, PermissionDenied
from gateway.key_requests import KeyCreateBody, KeyUpdateBody, apply
from gateway.key_spec import KeySpec, parse_duration
from gateway.key_store import KeyStore
from observability.limits_config import TeamLimits
from tests.support.clock import ManualClock

SPEC = KeySpec(models=("m",), expires_at=2_000_000.0, limits=TeamLimits(5, 1000, 1.5, None), on_exceed="route",
               metadata={"owner": "ana"}, tags={"project": "x"})


def test_the_spec_survives_the_store_and_updates_replace_it(tmp_path: Path) -> None:
    store = KeyStore.in_data_dir(tmp_path)
    key, info = store.create("red", "ci", SPEC)
    assert info.spec == SPEC and store.lookup(hash_key(key)) == info
    changed = KeySpec(models=None, limits=TeamLimits(requests_per_minute=9))
    assert store.update(info.key_id, "renamed", changed)
    found = store.lookup(hash_key(key))
    assert found is not None and found.spec == changed and found.name == "renamed"
    assert store.revoke(info.key_id) and not store.update(info.key_id, "x", SPEC)
    store.close()


def test_a_rotated_key_works_for_its_grace_period_and_not_after(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    store = KeyStore.in_data_dir(tmp_path, clock=clock)
    old, info = store.create("red", spec=SPEC)
    rotated = store.rotate(info.key_id, grace_s=60)
    assert rotated is not None
    new, new_info = rotated
    assert new != old and new_info.key_id == info.key_id and new.split("-")[2] == info.key_id
    assert new_info.spec == SPEC  # limits and scope follow the key
    clock.now += 59
    assert store.lookup(hash_key(old)) is not None and store.lookup(hash_key(new)) is not None
    clock.now += 2
    assert store.lookup(hash_key(old)) is None and store.lookup(hash_key(new)) is not None
    assert store.rotate("nosuchid", 60) is None
    store.close()


def test_revoking_ends_the_grace_period_too_and_no_grace_means_at_once(tmp_path: Path) -> None:
    store = KeyStore.in_data_dir(tmp_path)
    old, info = store.create("red")
    rotated = store.rotate(info.key_id, grace_s=3600)
    assert rotated is not None and store.lookup(hash_key(old)) is not None
    store.revoke(info.key_id)
    assert store.lookup(hash_key(old)) is None and store.lookup(hash_key(rotated[0])) is None
    old2, info2 = store.create("red")
    assert store.rotate(info2.key_id, grace_s=0) is not None and store.lookup(hash_key(old2)) is None
    store.close()


def test_spend_and_last_use_add_up(tmp_path: Path) -> None:
    store = KeyStore.in_data_dir(tmp_path)
    _, info = store.create("red")
    store.record_use(info.key_id, 0.25, 500.0)
    store.record_use(info.key_id, 0.5, 400.0)  # an older record arriving late does not move it back
    store.record_use("policy:abc", 1.0, 900.0)  # not a stored key: nothing happens
    row = store.get(info.key_id)
    assert row is not None and (row.requests, row.spend_usd, row.last_used_at) == (2, 0.75, 500.0)
    listed = store.list()[0].to_dict()
    assert listed["spend_usd"] == 0.75 and listed["models"] is None and "key_hash" not in listed
    store.close()


def test_a_key_file_from_before_virtual_keys_opens_and_its_keys_work(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "keys.sqlite3")
    db.execute("CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, team TEXT NOT NULL,"
               " name TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, revoked_at REAL)")
    db.execute("INSERT INTO api_keys VALUES ('0123abcd', ?, 'red', 'old', 1.0, NULL)", (hash_key("sk-old"),))
    db.commit()
    db.close()
    store = KeyStore.in_data_dir(tmp_path)
    assert store.lookup(hash_key("sk-old")) == KeyInfo("0123abcd", "red", "old", KeySpec())
    assert store.list()[0].spend_usd == 0.0
    store.close()


def test_an_expired_key_is_a_401_and_an_alias_outside_its_scope_a_403() -> None:
    info = KeyInfo("k1", "red", spec=KeySpec(models=("m",), expires_at=100.0))
    assert check_key_live(info, now=99.9) is info
    with pytest.raises(AuthError) as expired:
        check_key_live(info, now=100.0)
    assert expired.value.code == "expired_api_key"
    check_key_alias(info.spec, "k1", "m")
    with pytest.raises(PermissionDenied) as denied:
        check_key_alias(info.spec, "k1", "big")
    assert denied.value.param == "model" and "'big'" in denied.value.message


def test_an_update_changes_only_what_it_names() -> None:
    body = KeyUpdateBody.model_validate({"limits": {"requests_per_minute": 7}, "tags": {"a": "b"}})
    spec = apply(body, SPEC, now=0.0)
    assert spec.limits == TeamLimits(7, None, 1.5, None)  # the limits object replaced, the budget kept
    assert spec.models == ("m",) and spec.tags == {"a": "b"} and spec.metadata == {"owner": "ana"}
    cleared = apply(KeyUpdateBody.model_validate({"models": None, "duration": "1h"}), SPEC, now=10.0)
    assert cleared.models is None and cleared.expires_at == 3610.0
    made = apply(KeyCreateBody.model_validate({"team": "t", "budget": {"usd_per_day": 2}}), KeySpec())
    assert made.limits.usd_per_day == 2 and made.on_exceed is None


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200),
                                               ("30d", 2592000), ("2w", 1209600)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-5", "0", "5y", "abc"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
