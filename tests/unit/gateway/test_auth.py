"""Bearer → hash → team, with the lookup passed in; and the SQLite key store behind it."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from gateway.auth import (
    KeyInfo,
    authenticate,
    authorization,
    bearer_token,
    hash_key,
    is_admin,
    new_key,
    sole_authorization,
)
from gateway.errors import AuthError, InvalidRequest
from gateway.key_store import KeyStore


def test_lookup_by_hash() -> None:
    key, key_id = new_key()
    table = {hash_key(key): KeyInfo(key_id, "red")}
    assert authenticate(f"Bearer {key}", table.get) == KeyInfo(key_id, "red")
    assert authenticate(f"bearer   {key}", table.get).team == "red"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Token abc", "abc"])
def test_malformed_headers(header: str | None) -> None:
    with pytest.raises(AuthError):
        authenticate(header, lambda h: KeyInfo("x", "y"))


def test_unknown_key_message_does_not_echo_the_whole_key() -> None:
    with pytest.raises(AuthError) as info:
        authenticate("Bearer sk-hgw-abcdefgh-verysecretpart", lambda h: None)
    assert "verysecretpart" not in info.value.message


def _everything_stored(path: Path) -> str:
    """Every table's every value as SQL text, read as any SQLite client would (WAL included)."""
    with closing(sqlite3.connect(path)) as conn:
        return "\n".join(conn.iterdump())


def test_bearer_token() -> None:
    assert bearer_token("Bearer k1") == "k1"


def test_keys_are_unique_and_id_is_their_prefix() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    for key, key_id in keys:
        assert key.startswith(f"sk-hgw-{key_id}-")


def test_admin() -> None:
    assert is_admin("Bearer adm", "adm")
    assert not is_admin("Bearer other", "adm")
    assert not is_admin(None, "adm")
    assert not is_admin("Bearer adm", None)


def test_key_store_roundtrip(tmp_path: Path) -> None:
    store = KeyStore.in_data_dir(tmp_path)
    assert store.count() == 0
    key, info = store.create("red", "ci")
    assert store.lookup(hash_key(key)) == info
    # Read every stored value through a connection of its own: the new row may still sit in the WAL,
    # where reading the main file's bytes would not see it (and a plain-text key would pass).
    stored = _everything_stored(tmp_path / "keys.sqlite3")
    assert hash_key(key) in stored and info.key_id in stored  # the reader does see the new row
    secret = key.split(f"{info.key_id}-", 1)[1]
    assert key not in stored and secret not in stored
    assert [r.key_id for r in store.list()] == [info.key_id]
    assert store.revoke(info.key_id) and not store.revoke(info.key_id)
    assert store.lookup(hash_key(key)) is None
    assert store.list() == [] and len(store.list(include_revoked=True)) == 1
    store.close()
    with pytest.raises(ValueError):
        KeyStore.in_data_dir(tmp_path).create("  ")


def test_two_authorization_headers_are_ambiguous_not_the_first() -> None:
    two = Headers(raw=[(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")])
    with pytest.raises(InvalidRequest) as refused:
        authorization(two)
    assert refused.value.code == "ambiguous_authorization" and refused.value.param == "authorization"
    assert sole_authorization(two) is None  # /readyz and /metrics: counted as no credentials
    one = Headers(raw=[(b"authorization", b"Bearer a")])
    assert authorization(one) == sole_authorization(one) == "Bearer a"
    assert authorization(Headers(raw=[])) is None
