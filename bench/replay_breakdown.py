"""Where a local request's TTFT went in a `bench/replay_vs_real.py --spans` run: the gateway's ledger
(arrival, TTFT, upstream call → first chunk) matched to the engine's own spans (HYBRIDGW_TRACES=console:
its arrival after HTTP + tokenizing, first step that computed it, first token handed to its event loop).

Phases of one local TTFT, in order: gateway (arrival → upstream call sent), to engine (→ the engine's
arrival: HTTP, body parsing, tokenizing), engine queue (→ its first step), prefill (→ first token on the
engine's event loop: the step, and the loop's lag), back (→ first content chunk at the gateway)."""

from __future__ import annotations

import bisect
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from bench.engine_spans import console_spans, span_time

MATCH_WINDOW_S = 10.0  # under load a request reached the engine seconds after the gateway took it
PHASES = ("gateway", "to engine", "engine queue", "prefill", "back")


@dataclass(frozen=True)
class EngineSpan:
    arrived: float  # unix seconds
    scheduled: float
    first_token: float
    prompt_tokens: int


def engine_roots(log: str) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """The engine's root spans not aborted, each with its queue and prefill children (one without both is
    left out), from a console-exporter log."""
    spans = console_spans(log)
    children: dict[tuple[str, str], dict[str, Any]] = {(s["parent_id"], s["name"]): s for s in spans if s.get("parent_id")}
    out = []
    for s in spans:
        if not s["name"].startswith("engine ") or s["attributes"].get("hybridgw.engine.aborted"):
            continue
        own = s["context"]["span_id"]
        queue, prefill = children.get((own, "engine.queue")), children.get((own, "engine.prefill"))
        if queue is not None and prefill is not None:
            out.append((s, queue, prefill))
    return out


def engine_spans(log: str) -> list[EngineSpan]:
    """The engine's root spans with their queue and prefill children, from a console-exporter log."""
    out = [EngineSpan(span_time(s["start_time"]), span_time(queue["end_time"]), span_time(prefill["end_time"]),
                      int(s["attributes"]["gen_ai.usage.input_tokens"])) for s, queue, prefill in engine_roots(log)]
    return sorted(out, key=lambda e: e.arrived)


def local_matches(ledger_rows: list[dict[str, Any]], arrivals: Sequence[float],
                  prompt_tokens: Sequence[int]) -> list[tuple[dict[str, Any], float, int]]:
    """Each local request of the ledger (its usage records as dicts) matched to an engine span (their
    arrivals, sorted, and prompt tokens): the earliest unmatched one with the same prompt tokens (the
    engine's count, as the ledger keeps it) arriving after the gateway sent the call; (the row, when the
    gateway sent the call, the span's index)."""
    used: set[int] = set()
    out = []
    for r in sorted(ledger_rows, key=lambda r: r["time"]):
        if r.get("backend") != "local" or r.get("ttft_s") is None or r.get("upstream_latency_s") is None:
            continue
        sent = r["time"] + r["ttft_s"] - r["upstream_latency_s"]
        j = bisect.bisect_left(arrivals, sent - 0.005)  # clocks of one host; 5 ms of rounding
        while j < len(arrivals) and (j in used or prompt_tokens[j] != r["prompt_tokens"]):
            j += 1
        if j == len(arrivals) or arrivals[j] - sent > MATCH_WINDOW_S:
            continue
        used.add(j)
        out.append((r, sent, j))
    return out


def breakdown(ledger_rows: list[dict[str, Any]], spans: list[EngineSpan]) -> list[dict[str, float]]:
    """Per local request of the ledger matched to an engine span (local_matches): the phases in seconds,
    and the request's arrival."""
    out = []
    for r, sent, j in local_matches(ledger_rows, [e.arrived for e in spans], [e.prompt_tokens for e in spans]):
        e, first = spans[j], r["time"] + r["ttft_s"]
        out.append({"time": r["time"], "ttft": r["ttft_s"], "gateway": sent - r["time"], "to engine": e.arrived - sent,
                    "engine queue": e.scheduled - e.arrived, "prefill": e.first_token - e.scheduled,
                    "back": first - e.first_token})
    return out


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(rows: list[dict[str, float]], busy_until: float) -> str:
    """Markdown: median and p95 of each phase, for the requests arriving in the busy period and after."""
    start = min(r["time"] for r in rows) if rows else 0.0
    groups = (("busy", [r for r in rows if r["time"] - start < busy_until]),
              ("quiet", [r for r in rows if r["time"] - start >= busy_until]))
    lines = ["| local requests | n | TTFT | " + " | ".join(PHASES) + " |", "|---|---:|" + "---:|" * (len(PHASES) + 1)]
    for name, group in groups:
        for label, q in (("p50", 0.5), ("p95", 0.95)):
            if group:
                cells = " | ".join(f"{_q([r[k] for r in group], q):.3f}" for k in ("ttft", *PHASES))
                lines.append(f"| {name} {label} | {len(group)} | {cells} |")
    if rows:
        shares = {k: median(r[k] / r["ttft"] for r in rows if r["ttft"] > 0) for k in PHASES}
        lines.append("median share of TTFT: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    return "\n".join(lines)


def read_ledger_rows(path: Path, since: float, until: float) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT body FROM usage_records WHERE time >= ? AND time < ?", (since, until)).fetchall()
    finally:
        conn.close()
    return [json.loads(body) for (body,) in rows]
