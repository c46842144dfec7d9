"""Per-team usage rollups by hour and day: the pure counter math both stores share.

A rollup is a flat map of named counters, so rollups merge by addition and map 1:1 onto a
Redis hash (HINCRBY) or SQLite rows (UPSERT value = value + delta). No I/O here. A shadow call
counts in cost only (`cost_nusd` and its own `shadow|` / `shadow_b|` counters), never as traffic.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # usage.py imports this module (UsageRecord.rollup_fields); annotations only here
    from observability.usage import UsageRecord

HOUR_S = 3600
DAY_S = 86400
NANO = 1_000_000_000  # costs are kept in integer nano-USD so sums are exact in every store
MICRO = 1_000_000

# Latency bucket upper bounds (seconds): ten per decade from 1 ms to 1000 s ("E10" steps), fine
# enough that a percentile read back from a bucket is within ~12% of the truth.
_STEPS = (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0)
LATENCY_BOUNDS_S: tuple[float, ...] = tuple(
    round(s * 10.0**e, 6) for e in range(-3, 3) for s in _STEPS
) + (1000.0,)
# ISL / OSL bucket lower edges (tokens): log-ish, doubling from 16; the last bucket is open.
TOKEN_EDGES: tuple[int, ...] = (0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
# Output-token positions for the ITL profile: bucket i holds gaps before tokens [2^i, 2^(i+1)).
NUM_POSITION_BUCKETS = 16

Fields = dict[str, float]


@dataclass(frozen=True)
class Rollup:
    """One team's counters for one hour or one day (UTC), start in unix seconds."""

    team: str
    period: str  # "hour" or "day"
    start: int
    fields: Mapping[str, float] = field(default_factory=dict)


def period_start(t: float, period: str) -> int:
    size = HOUR_S if period == "hour" else DAY_S
    return int(t // size * size)


def name_part(name: str) -> str:
    """Backend / model / error names become one field segment ('|' separates segments)."""
    return (name or "none").replace("|", "_")


def latency_bucket(seconds: float) -> int:
    """Index into LATENCY_BOUNDS_S (+1 overflow bucket); a value on a bound falls in that bound's bucket."""
    return bisect_left(LATENCY_BOUNDS_S, seconds)


def token_bucket(tokens: int) -> int:
    return bisect_right(TOKEN_EDGES, max(tokens, 0)) - 1


def position_bucket(position: int) -> int:
    return min(max(position, 1).bit_length() - 1, NUM_POSITION_BUCKETS - 1)


def _add(out: Fields, name: str, value: float) -> None:
    out[name] = out.get(name, 0) + value


def _latency_fields(out: Fields, record: UsageRecord) -> None:
    if record.ttft_s is not None:
        _add(out, f"ttft|{latency_bucket(record.ttft_s)}", 1)
        _add(out, "ttft_sum_us", round(record.ttft_s * MICRO))
        # sufficient statistics for the TTFT-vs-input-length fit (floats: statistics, not totals)
        x, y = float(record.prompt_tokens), record.ttft_s
        for name, value in (("reg|n", 1.0), ("reg|sx", x), ("reg|sy", y), ("reg|sxx", x * x), ("reg|sxy", x * y)):
            _add(out, name, value)
    e2e_bucket = latency_bucket(record.e2e_s)
    _add(out, f"e2e|{e2e_bucket}", 1)
    _add(out, "e2e_sum_us", round(record.e2e_s * MICRO))
    _add(out, f"e2e_b|{name_part(record.backend)}|{e2e_bucket}", 1)
    _gap_fields(out, record.itl_gaps_s)


def _gap_fields(out: Fields, gaps: tuple[float, ...]) -> None:
    """Every inter-token gap into the ITL histogram and the by-position profile (counted locally
    first: this runs once per output token)."""
    if not gaps:
        return
    buckets: dict[int, int] = {}
    pos_n: dict[int, int] = {}
    pos_us: dict[int, int] = {}
    total_us = 0
    for index, gap in enumerate(gaps):
        bucket = bisect_left(LATENCY_BOUNDS_S, gap)
        buckets[bucket] = buckets.get(bucket, 0) + 1
        us = round(gap * MICRO)
        total_us += us
        # the first gap precedes output token 2, so position = index + 1 counts from token 1
        pos = position_bucket(index + 1)
        pos_n[pos] = pos_n.get(pos, 0) + 1
        pos_us[pos] = pos_us.get(pos, 0) + us
    for bucket, count in buckets.items():
        _add(out, f"itl|{bucket}", count)
    _add(out, "itl_sum_us", total_us)
    for pos, count in pos_n.items():
        _add(out, f"itl_pos|{pos}|n", count)
        _add(out, f"itl_pos|{pos}|sum_us", pos_us[pos])


def record_fields(record: UsageRecord) -> Fields:
    """The counter increments one record adds to its team's hour and day rollups."""
    if record.is_shadow:
        return shadow_fields(record)
    cost = round(record.cost_usd * NANO)
    out: Fields = {
        "requests": 1,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "est_prompt_tokens": record.estimated_prompt_tokens,
        "est_completion_tokens": record.estimated_completion_tokens,
        "cost_nusd": cost,
        f"status|{name_part(record.status)}": 1,
    }
    for group, name in (("backend", record.backend), ("model", record.model_alias)):
        prefix = f"{group}|{name_part(name)}|"
        _add(out, prefix + "requests", 1)
        _add(out, prefix + "prompt_tokens", record.prompt_tokens)
        _add(out, prefix + "completion_tokens", record.completion_tokens)
        _add(out, prefix + "cost_nusd", cost)
    if record.status != "ok":
        _add(out, f"err|{name_part(record.error_type or record.status)}", 1)
    if record.status == "ok":  # failed requests are counted apart (status/err), not as short outputs
        isl, osl = token_bucket(record.prompt_tokens), token_bucket(record.completion_tokens)
        _add(out, f"isl_osl|{isl}|{osl}", 1)
    _latency_fields(out, record)
    return out


def shadow_fields(record: UsageRecord) -> Fields:
    """A shadow call is the team's spend, not a request a client made: it adds to the total cost
    (what budgets and spend read) and to the `shadow|` counters (per backend: `shadow_b|<name>|`),
    never to requests, tokens served, statuses, the ISL/OSL histogram or latency."""
    cost = round(record.cost_usd * NANO)
    out: Fields = {"cost_nusd": cost}
    for prefix in ("shadow|", f"shadow_b|{name_part(record.backend)}|"):
        out[prefix + "calls"] = 1
        out[prefix + "prompt_tokens"] = record.prompt_tokens
        out[prefix + "completion_tokens"] = record.completion_tokens
        out[prefix + "cost_nusd"] = cost
    if record.status != "ok":
        out["shadow|failed"] = 1
    return out


def is_float_field(name: str) -> bool:
    return name.startswith("reg|")


def merge_fields(parts: Iterable[Mapping[str, float]]) -> Fields:
    total: Fields = {}
    for part in parts:
        for name, value in part.items():
            _add(total, name, value)
    return total


def rollups_for(records: Iterable[UsageRecord]) -> dict[tuple[str, str, int], Fields]:
    """Fold records into {(team, period, start): fields} for both periods (what a store writes)."""
    out: dict[tuple[str, str, int], Fields] = {}
    for record in records:
        inc = record.rollup_fields  # record_fields(record), kept from the poison check
        for period in ("hour", "day"):
            key = (record.team, period, period_start(record.time, period))
            total = out.get(key)
            if total is None:
                out[key] = dict(inc)
            else:  # added in place: a batch's records mostly share their hour and day
                for name, value in inc.items():
                    total[name] = total.get(name, 0) + value
    return out


def histogram(fields: Mapping[str, float], prefix: str) -> list[int]:
    """Bucket counts of a latency histogram ("ttft", "itl", "e2e" or "e2e_b|<backend>")."""
    counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
    head = prefix + "|"
    for name, value in fields.items():
        if name.startswith(head):
            rest = name[len(head):]
            if rest.isdigit() and int(rest) < len(counts):
                counts[int(rest)] += int(value)
    return counts


def grouped(fields: Mapping[str, float], group: str) -> dict[str, dict[str, float]]:
    """{name: {metric: value}} for "backend", "model" or "shadow_b" (shadow calls per backend) fields."""
    out: dict[str, dict[str, float]] = {}
    head = group + "|"
    for name, value in fields.items():
        if name.startswith(head):
            member, _, metric = name[len(head):].rpartition("|")
            out.setdefault(member, {})[metric] = value
    return out


def labelled(fields: Mapping[str, float], prefix: str) -> dict[str, int]:
    """{label: count} for one-segment counters such as "status|ok" or "err|timeout"."""
    head = prefix + "|"
    return {name[len(head):]: int(v) for name, v in fields.items() if name.startswith(head)}


def isl_osl_matrix(fields: Mapping[str, float]) -> list[list[int]]:
    """Completed-request counts, [ISL bucket][OSL bucket], over TOKEN_EDGES (failures are not in it)."""
    size = len(TOKEN_EDGES)
    matrix = [[0] * size for _ in range(size)]
    for name, value in fields.items():
        if name.startswith("isl_osl|"):
            _, i, j = name.split("|")
            if int(i) < size and int(j) < size:
                matrix[int(i)][int(j)] += int(value)
    return matrix


def itl_profile(fields: Mapping[str, float]) -> list[tuple[int, float, int]]:
    """(first position of bucket, mean gap seconds, gap count) per non-empty position bucket."""
    out = []
    for i in range(NUM_POSITION_BUCKETS):
        n = fields.get(f"itl_pos|{i}|n", 0)
        if n:
            out.append((2**i, fields.get(f"itl_pos|{i}|sum_us", 0) / MICRO / n, int(n)))
    return out
