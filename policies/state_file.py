"""The JSON files `hybridgw policy explain` reads: a request (a body, or {body, team, headers,
over_budget}) and an optional live state (engines as /v1/engine/state reports them, health, time,
and per engine the teams' holds and demand for team fairness)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from policies.engine_state import parse_engine_state
from policies.fairness import INTERACTIVE, EngineTeams
from policies.live import EngineSnapshot, HealthView, LiveState

MONO_NOW = 1_000_000.0  # explain's monotonic "now"; snapshots are placed age_s before it


@dataclass(frozen=True)
class ExplainRequest:
    body: dict[str, Any]
    team: str = "default"
    headers: dict[str, str] = field(default_factory=dict)
    over_budget: bool = False


def parse_request(data: Any) -> ExplainRequest:
    if not isinstance(data, dict):
        raise ValueError("the request file must hold a JSON object (a request body, or {\"body\": …})")
    if "body" not in data:
        return ExplainRequest(data)
    body = data["body"]
    headers = data.get("headers") or {}
    if not isinstance(body, dict) or not isinstance(headers, dict):
        raise ValueError("\"body\" and \"headers\" must be JSON objects")
    return ExplainRequest(body, str(data.get("team", "default")), {str(k): str(v) for k, v in headers.items()},
                          data.get("over_budget") is True)


def _health(data: Any) -> HealthView:
    if not isinstance(data, dict):
        raise ValueError("each health entry must be a JSON object")
    state = data.get("state", "closed")
    if state not in ("closed", "open", "half_open"):
        raise ValueError(f"health state must be closed, open or half_open, not {state!r}")
    retry_in = float(data.get("retry_in_s", 0.0))
    return HealthView(state, MONO_NOW + retry_in, data.get("ttft_s"), data.get("ttft_p95_s"),
                      int(data.get("consecutive_failures", 0)))


def parse_time(value: Any) -> float:
    """ISO-8601 (a naive time is UTC) or unix seconds → unix seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"time must be ISO-8601 or unix seconds, not {value!r}")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _teams(data: Any) -> EngineTeams:
    """{"held": {team: n}, "wanting": {team: class}, "claims": {team: n}}; a claim defaults to held + 1,
    and a team that holds some counts as wanting it (interactive) unless `wanting` is given."""
    if not isinstance(data, dict):
        raise ValueError("each teams entry must be a JSON object with held / wanting / claims")
    held = {str(k): int(v) for k, v in (data.get("held") or {}).items()}
    wanting = {str(k): str(v) for k, v in (data.get("wanting") or dict.fromkeys(held, INTERACTIVE)).items()}
    claims = {t: held.get(t, 0) + 1 for t in wanting} | {str(k): int(v) for k, v in (data.get("claims") or {}).items()}
    return EngineTeams(MappingProxyType(held), MappingProxyType(wanting), MappingProxyType(claims))


STATE_KEYS = ("engines", "health", "reserved_blocks", "teams", "time")


def parse_state(data: Any, stale_after_s: float) -> tuple[LiveState, float | None]:
    """(live state, wall time from the file or None); ValueError for keys it would ignore (one engine's own
    /v1/engine/state, say, which belongs under `engines`)."""
    if not isinstance(data, dict):
        raise ValueError("the state file must hold a JSON object with engines / health / reserved_blocks / time")
    unknown = sorted(set(data) - set(STATE_KEYS))
    if unknown:
        hint = ("; it looks like one engine's /v1/engine/state: put it under {\"engines\": {\"BACKEND\": …}}"
                if "num_blocks_free" in data else "")
        raise ValueError(f"unknown keys in the state file: {', '.join(unknown[:5])} "
                         f"(allowed: {', '.join(STATE_KEYS)}){hint}")
    engines: dict[str, EngineSnapshot] = {}
    for name, doc in (data.get("engines") or {}).items():
        age = float(doc.get("age_s", 0.0)) if isinstance(doc, dict) else 0.0
        snap = parse_engine_state(doc, MONO_NOW - age)
        if snap is not None:
            engines[name] = snap
    health = {name: _health(doc) for name, doc in (data.get("health") or {}).items()}
    reserved = {str(k): int(v) for k, v in (data.get("reserved_blocks") or {}).items()}
    teams = {str(name): _teams(doc) for name, doc in (data.get("teams") or {}).items()}  # team fairness
    wall = parse_time(data["time"]) if "time" in data else None
    return LiveState(MONO_NOW, MappingProxyType(engines), MappingProxyType(health), MappingProxyType(reserved),
                     stale_after_s, teams=MappingProxyType(teams)), wall
