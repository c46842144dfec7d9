"""The limits stored with API keys (`hybridgw keys create --rpm/--tpm/--usd-per-day/--on-exceed`), read
read-only from the gateway's key store file for a replay: the recording names each request's key_id,
and the gateway enforces these on top of the policy's `keys:` (the tighter of the two, per field)."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from observability.limits_config import TeamLimits
from policies.replay.traffic import TrafficError

KEY_STORE_FILE = "keys.sqlite3"  # gateway/key_store.py's file in the data dir


@dataclass(frozen=True)
class StoredKey:
    """A key's own limits and what its spent budget means (None: its team's on_exceed)."""

    limits: TeamLimits
    on_exceed: str | None = None


def stored_key(spec: Mapping[str, Any]) -> StoredKey:
    """The limits part of a key's stored spec (gateway/key_spec.py's JSON: limits, budget)."""
    limits, budget = spec.get("limits") or {}, spec.get("budget") or {}
    return StoredKey(TeamLimits(requests_per_minute=limits.get("requests_per_minute"),
                                tokens_per_minute=limits.get("tokens_per_minute"),
                                usd_per_day=budget.get("usd_per_day"), usd_per_month=budget.get("usd_per_month")),
                     budget.get("on_exceed"))


def read_key_store(path: Path) -> dict[str, StoredKey]:
    """key_id → its stored limits, for every key (revoked ones too: the recording may predate that).
    `path`: the key store's SQLite file or the data dir holding it; opened read-only."""
    if path.is_dir():
        path = path / KEY_STORE_FILE
    if not path.is_file():
        raise TrafficError(f"{path}: no key store there (expected the gateway's {KEY_STORE_FILE})")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}
            if not columns:
                raise TrafficError(f"{path}: not a key store (no api_keys table)")
            if "spec" not in columns:  # a key file from before keys had their own limits
                return {}
            rows = conn.execute("SELECT key_id, spec FROM api_keys").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise TrafficError(f"{path}: cannot read the key store: {exc}") from None
    out = {}
    for key_id, text in rows:
        try:
            spec = json.loads(text) if text else {}
        except ValueError as exc:
            raise TrafficError(f"{path}: key {key_id}: unreadable spec: {exc}") from None
        out[str(key_id)] = stored_key(spec if isinstance(spec, dict) else {})
    return out
