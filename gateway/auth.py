"""Who is calling: bearer key → sha256 hash → the key's team, and whether the policy serves that
team. Pure; the lookup and the policy are passed in."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from starlette.datastructures import Headers

from gateway.errors import AuthError, InvalidRequest, PermissionDenied
from gateway.key_spec import KeySpec
from policies.schema import Policy

KEY_PREFIX = "sk-hgw-"


@dataclass(frozen=True)
class KeyInfo:
    key_id: str  # short public prefix, safe to log and to show in reports
    team: str
    name: str = ""
    spec: KeySpec = field(default_factory=KeySpec)  # aliases, expiry, the key's own limits and budget, tags


KeyLookup = Callable[[str], "KeyInfo | None"]  # key hash → key, None when unknown or revoked


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (key, key_id); the id is the key's visible prefix so a user can tell keys apart."""
    key_id = secrets.token_hex(4)
    return key_for(key_id), key_id


def key_for(key_id: str) -> str:
    """A fresh secret under an existing key id (rotation keeps the id: limits and reports follow it)."""
    return f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(24)}"


def authorization(headers: Headers | Mapping[str, str]) -> str | None:
    """The request's one Authorization header (None: none). Two or more are refused (400), not the
    first taken: a proxy on the way, the gateway and a log could each believe a different one. A plain
    mapping holds each name once (proxy.request_headers: Starlette's Headers where a name repeats)."""
    if not isinstance(headers, Headers):
        return headers.get("authorization")
    values = headers.getlist("authorization")
    if len(values) > 1:
        raise InvalidRequest(f"The request has {len(values)} Authorization headers; send exactly one "
                             "('Authorization: Bearer <key>').", param="authorization",
                             code="ambiguous_authorization")
    return values[0] if values else None


def sole_authorization(headers: Headers) -> str | None:
    """The one Authorization header, None when there are none or several: for a check that only withholds
    (/readyz's details, /metrics), where ambiguous credentials count as none."""
    values = headers.getlist("authorization")
    return values[0] if len(values) == 1 else None


def bearer_token(header: str | None) -> str:
    if not header:
        raise AuthError("You didn't provide an API key. Pass it as 'Authorization: Bearer <key>'.",
                        code="missing_api_key")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Malformed Authorization header; expected 'Bearer <key>'.", code="invalid_api_key")
    return token


def unknown_key(token: str) -> AuthError:
    """No part of the token is echoed (it may be the admin key, or a secret pasted by mistake);
    only a key of ours names its public key id."""
    parts = token.split("-")
    key_id = parts[2] if token.startswith(KEY_PREFIX) and len(parts) > 3 and len(parts[2]) == 8 else None
    shown = f" (key id {key_id})" if key_id and all(c in "0123456789abcdef" for c in key_id) else ""
    return AuthError(f"Incorrect API key provided{shown}.", code="invalid_api_key")


def authenticate(header: str | None, lookup: KeyLookup) -> KeyInfo:
    token = bearer_token(header)
    info = lookup(hash_key(token))
    if info is None:
        raise unknown_key(token)
    return info


def served_team(team: str, policy: Policy) -> str | None:
    """The team a key of `team` is served as: itself when the policy names it, `default` when the
    policy's `unknown_teams: default` says so, else None (refused)."""
    if team in policy.teams:
        return team
    if policy.unknown_teams == "default" and "default" in policy.teams:
        return "default"
    return None


def admit(info: KeyInfo, policy: Policy) -> KeyInfo:
    """The key as it is served under `policy`; PermissionDenied when its team is not in it."""
    team = served_team(info.team, policy)
    if team is None:
        raise PermissionDenied(
            f"This key belongs to team {info.team!r}, which the gateway's policy does not name; "
            "an operator must add the team to the policy (or make a key for an existing team).",
            code="unknown_team")
    return info if team == info.team else replace(info, team=team)


def check_key_live(info: KeyInfo, now: float | None = None) -> KeyInfo:
    """AuthError (401) for a key past its expiry."""
    if info.spec.expired(time.time() if now is None else now):
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.spec.expires_at or 0))
        raise AuthError(f"This API key (key id {info.key_id}) expired at {when}.", code="expired_api_key")
    return info


def check_key_alias(spec: KeySpec, key_id: str, alias: str) -> None:
    """PermissionDenied (403) for an alias the key's team may use but the key itself may not."""
    if not spec.allows(alias):
        allowed = ", ".join(spec.models or ()) or "none"
        raise PermissionDenied(f"This API key (key id {key_id}) may not use model {alias!r}; it may use: "
                               f"{allowed}.", param="model", code="model_not_allowed_for_key")


def new_key_refusal(team: str, policy: Policy) -> str | None:
    """Why a key for `team` may not be made under `policy` (None: it may)."""
    if served_team(team, policy) is not None:
        return None
    known = ", ".join(sorted(policy.teams)) or "none"
    return (f"Team {team!r} is not in the policy (teams: {known}); add it under `teams:` first, "
            "or set `unknown_teams: default` to serve such keys as team `default`.")


def is_admin(header: str | None, admin_key: str | None) -> bool:
    """Constant-time check of the admin bearer key; no admin key configured → nobody is admin."""
    if not admin_key:
        return False
    try:
        token = bearer_token(header)
    except AuthError:
        return False
    return hmac.compare_digest(token.encode(), admin_key.encode())
