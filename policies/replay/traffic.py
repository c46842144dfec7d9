"""Recorded traffic as the replay reads it: one frozen record per request, from a JSONL file or the
usage ledger's SQLite file (read-only), checked on the way in (errors name the line or record)."""
from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from observability.fast_init import fast_init
from observability.usage import EngineView
from policies.shadow_spec import SHADOW_RULE


class TrafficError(ValueError):
    """Traffic that cannot be replayed (unreadable, empty, or a bad record)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the gateway actually did with a ledger record: the baseline a replay is compared with."""

    backend: str  # "" when nothing served it
    status: str
    cost_usd: float
    ttft_s: float | None
    e2e_s: float
    # Each engine as the gateway saw it when it routed the request (empty in ledgers from before the field).
    view: Mapping[str, EngineView] = field(default_factory=dict)


@fast_init  # one per request read: a day at 10 requests/s is 864k (observability/fast_init.py)
@dataclass(frozen=True, slots=True)
class TrafficRecord:
    time: float  # arrival, unix seconds (or seconds from the start of the recording)
    team: str
    model: str  # the alias the client asked for
    prompt_tokens: int
    output_tokens: int  # what was generated: the simulated request stops there
    max_tokens: int | None = None  # the client's max_tokens, when known (else the policy's estimate)
    prefix_id: str = ""  # requests with the same id share their first `prefix_tokens` tokens
    prefix_tokens: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    recorded: Recorded | None = None  # from the ledger: how it was actually served
    key_id: str = ""  # the API key's public id: its own limits and budget (the policy's `keys:`) apply too
    # The body field that asked for constrained output ("response_format", "guided_json", …; "" none): decide()
    # passes our engine over for it, as the gateway did (policies/structured_output.py).
    structured_output: str = ""


_FIELDS = {"time", "team", "model", "prompt_tokens", "output_tokens", "max_tokens", "prefix_id", "prefix_tokens",
           "headers", "model_alias", "completion_tokens", "key_id", "structured_output"}
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_NO_VIEW: Mapping[str, EngineView] = MappingProxyType({})


def _count(value: Any, key: str, where: str, minimum: int) -> int:
    if value.__class__ is not int or value < minimum:  # bool is not int here
        raise TrafficError(f"{where}: {key} must be an integer ≥ {minimum}, got {value!r}")
    return value


def record_from_mapping(data: Any, where: str) -> TrafficRecord:
    """One JSONL line: time, team, model (or model_alias), prompt_tokens, output_tokens (or
    completion_tokens); optional max_tokens, prefix_id, prefix_tokens, headers, key_id, structured_output."""
    if data.__class__ is not dict and not isinstance(data, Mapping):  # (a dict, from JSON: no ABC check)
        raise TrafficError(f"{where}: a request is a JSON object")
    if not _FIELDS.issuperset(data):
        unknown = sorted(set(data) - _FIELDS)
        raise TrafficError(f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(_FIELDS))}")
    get = data.get
    when, team, model = get("time"), get("team"), get("model") or get("model_alias")
    if when.__class__ not in (int, float) or not math.isfinite(when):
        raise TrafficError(f"{where}: time must be a number (unix or relative seconds), got {when!r}")
    for key, value in (("team", team), ("model", model)):
        if not isinstance(value, str) or not value:
            raise TrafficError(f"{where}: {key} must be a non-empty string, got {value!r}")
    prompt = _count(get("prompt_tokens"), "prompt_tokens", where, 1)
    output = get("output_tokens")
    output = _count(get("completion_tokens") if output is None else output, "output_tokens", where, 0)
    max_tokens = get("max_tokens")
    max_tokens = None if max_tokens is None else _count(max_tokens, "max_tokens", where, 1)
    prefix_tokens = get("prefix_tokens")
    prefix_tokens = 0 if prefix_tokens is None else _count(prefix_tokens, "prefix_tokens", where, 0)
    headers = get("headers") or _NO_HEADERS
    if headers is not _NO_HEADERS and (not isinstance(headers, Mapping)
                                       or not all(isinstance(v, str) for v in headers.values())):
        raise TrafficError(f"{where}: headers must map names to strings")
    key_id = get("key_id") or ""
    if not isinstance(key_id, str):
        raise TrafficError(f"{where}: key_id must be a string, got {key_id!r}")
    structured = get("structured_output") or ""
    if not isinstance(structured, str):
        raise TrafficError(f"{where}: structured_output must be a string (the field that asked), got {structured!r}")
    return TrafficRecord(float(when), team, model, prompt, max(1, output), max_tokens, str(get("prefix_id") or ""),
                         min(prefix_tokens, prompt), _NO_HEADERS if headers is _NO_HEADERS else dict(headers),
                         key_id=key_id, structured_output=structured)


def read_jsonl(path: Path) -> list[TrafficRecord]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrafficError(f"{path}: cannot read the traffic file: {exc}") from None
    name = str(path)
    numbers = [number for number, line in enumerate(lines, 1) if line.strip()]
    try:  # one parse for the whole file (a day is ~900k lines); a bad line is found line by line below
        parsed = json.loads("[" + ",".join([lines[n - 1] for n in numbers]) + "]")
    except ValueError:
        parsed = None
    if parsed is None or len(parsed) != len(numbers):  # (two objects on one line also parse as two)
        parsed = []
        for number in numbers:
            try:
                parsed.append(json.loads(lines[number - 1]))
            except ValueError as exc:
                raise TrafficError(f"{name}:{number}: not JSON: {exc}") from None
    records = [record_from_mapping(data, f"{name}:{number}") for data, number in zip(parsed, numbers)]
    return _checked(records, name)


def _from_usage(body: str, where: str) -> TrafficRecord | None:
    data = json.loads(body)
    if data.get("rule") == SHADOW_RULE:  # a shadow call follows a request already in the ledger: no arrival
        return None
    estimated = data.get("estimated_completion_tokens") or None
    prompt, output = data.get("prompt_tokens"), data.get("completion_tokens") or 0
    if data.get("status") == "rejected":
        # Refused after routing (a limit, a budget, no capacity): the ledger keeps the gateway's estimate,
        # replayed as its prompt and output (another policy might serve it). Refused before routing
        # (auth, a bad body, an unknown model): no estimate, nothing a policy decides: skipped.
        prompt, output = data.get("estimated_prompt_tokens"), estimated or 0
    if not prompt:
        return None
    record = record_from_mapping({"time": data.get("time"), "team": data.get("team"), "model": data.get("model_alias"),
                                  "prompt_tokens": prompt, "output_tokens": output,
                                  "max_tokens": estimated if isinstance(estimated, int) and estimated > 0 else None,
                                  "key_id": str(data.get("key_id") or ""),
                                  "structured_output": str(data.get("structured_output") or "")},
                                 where)
    ttft, e2e, cost = data.get("ttft_s"), data.get("e2e_s"), data.get("cost_usd")
    served = str(data.get("backend") or "") if data.get("status") == "ok" else ""
    return replace(record, recorded=Recorded(
        served, str(data.get("status") or ""), float(cost) if isinstance(cost, (int, float)) else 0.0,
        float(ttft) if isinstance(ttft, (int, float)) else None, float(e2e) if isinstance(e2e, (int, float)) else 0.0,
        _views(data.get("engine_view"))))


def _views(raw: Any) -> Mapping[str, EngineView]:
    if not raw or not isinstance(raw, Mapping):
        return _NO_VIEW
    return {name: view for name, value in raw.items() if (view := EngineView.from_mapping(value)) is not None}


def read_ledger(path: Path, since: float, until: float, teams: Iterable[str] = ()) -> list[TrafficRecord]:
    """The usage ledger's records in [since, until), opened read-only (never created or migrated)."""
    if not path.is_file():
        raise TrafficError(f"{path}: no usage ledger there (expected the SQLite file, e.g. ~/.hybridgw/usage.sqlite3)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT request_id, body FROM usage_records WHERE time >= ? AND time < ? ORDER BY time",
                                (since, until)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise TrafficError(f"{path}: cannot read the usage ledger: {exc}") from None
    wanted = set(teams)
    records = []
    for request_id, body in rows:
        try:
            record = _from_usage(body, f"{path}: record {request_id}")
        except ValueError as exc:
            raise TrafficError(f"{path}: record {request_id}: unreadable: {exc}") from None
        if record is not None and (not wanted or record.team in wanted):
            records.append(record)
    return _checked(records, f"{path} between {since:.0f} and {until:.0f}")


def _checked(records: list[TrafficRecord], what: str) -> list[TrafficRecord]:
    if not records:
        raise TrafficError(f"{what}: no requests to replay (empty window or file)")
    records.sort(key=lambda r: r.time)  # stable: equal times keep the file's order
    return records
