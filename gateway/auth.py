"""Who is calling: bearer key → sha256 hash → the key's team. Pure; the lookup is passed in."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import AuthError

KEY_PREFIX = "sk-hgw-"


@dataclass(frozen=True)
class KeyInfo:
    key_id: str  # short public prefix, safe to log and to show in reports
    team: str
    name: str = ""


KeyLookup = Callable[[str], "KeyInfo | None"]  # key hash → key, None when unknown or revoked


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (key, key_id); the id is the key's visible prefix so a user can tell keys apart."""
    key_id = secrets.token_hex(4)
    return f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(24)}", key_id


def bearer_token(header: str | None) -> str:
    if not header:
        raise AuthError("You didn't provide an API key. Pass it as 'Authorization: Bearer <key>'.",
                        code="missing_api_key")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Malformed Authorization header; expected 'Bearer <key>'.", code="invalid_api_key")
    return token


def authenticate(header: str | None, lookup: KeyLookup) -> KeyInfo:
    token = bearer_token(header)
    info = lookup(hash_key(token))
    if info is None:
        shown = token[:12] + "…" if len(token) > 12 else "…"
        raise AuthError(f"Incorrect API key provided: {shown}", code="invalid_api_key")
    return info


def is_admin(header: str | None, admin_key: str | None) -> bool:
    """Constant-time check of the admin bearer key; no admin key configured → nobody is admin."""
    if not admin_key:
        return False
    try:
        token = bearer_token(header)
    except AuthError:
        return False
    return hmac.compare_digest(token.encode(), admin_key.encode())
