"""Keys are made and served only for teams the policy names (or as `default` when the policy says
so); an unknown key's error echoes no part of what was sent."""
from __future__ import annotations

import pytest

from gateway.auth import KeyInfo, admit, authenticate, new_key, new_key_refusal, served_team, unknown_key
from gateway.errors import AuthError, PermissionDenied, error_info
from policies.checks import policy_problems
from policies.loader import load_default_policy
from policies.schema import Policy

BASE = {"backends": {"up": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"m": {"deployments": [{"backend": "up", "model": "m"}]}}}


def _policy(**extra: object) -> Policy:
    return Policy.model_validate({**BASE, **extra})


def test_a_typo_team_is_refused_and_named_teams_are_listed() -> None:
    policy = _policy(teams={"ops": {}, "research": {}})
    assert new_key_refusal("ops", policy) is None
    refusal = new_key_refusal("aps", policy)
    assert refusal is not None and "'aps'" in refusal and "ops, research" in refusal
    assert new_key_refusal("aps", _policy()) is not None  # no teams at all: nobody gets a key


def test_unknown_teams_default_serves_them_as_team_default() -> None:
    policy = _policy(teams={"default": {"limits": {"requests_per_minute": 5}}}, unknown_teams="default")
    assert new_key_refusal("aps", policy) is None
    assert served_team("aps", policy) == "default"
    assert admit(KeyInfo("k1", "aps", "n"), policy) == KeyInfo("k1", "default", "n")


def test_unknown_teams_default_needs_a_default_team() -> None:
    problems = policy_problems(_policy(teams={"ops": {}}, unknown_teams="default"))
    assert [loc for loc, _ in problems] == [("unknown_teams",)]


def test_a_key_whose_team_left_the_policy_is_refused_with_403() -> None:
    with pytest.raises(PermissionDenied) as refused:
        admit(KeyInfo("k1", "gone"), _policy(teams={"ops": {}}))
    info = error_info(refused.value)
    assert (info.status, info.type, info.code) == (403, "permission_error", "unknown_team")
    assert "'gone'" in info.message
    assert admit(KeyInfo("k1", "ops"), _policy(teams={"ops": {}})) == KeyInfo("k1", "ops")


def test_the_embedded_default_policy_serves_team_default() -> None:
    policy = load_default_policy({}).policy
    assert new_key_refusal("default", policy) is None and new_key_refusal("red", policy) is not None


@pytest.mark.parametrize("token", ["admin-super-secret-value", "sk-live-abcdefghijklmnop", "short", "sk-hgw-zz"])
def test_an_unknown_key_echoes_no_part_of_it(token: str) -> None:
    with pytest.raises(AuthError) as info:
        authenticate(f"Bearer {token}", lambda h: None)
    assert token[:4] not in info.value.message


def test_an_unknown_key_of_ours_names_only_its_public_id() -> None:
    key, key_id = new_key()
    message = unknown_key(key).message
    assert f"key id {key_id}" in message and key[len("sk-hgw-") + 9:] not in message
