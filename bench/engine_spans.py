"""The engine's own clock for each request of `bench/bench_vs_aiperf.py --engine-spans`: the engine's
spans (HYBRIDGW_TRACES=console, every request carrying a sampled traceparent) give its arrival, first
token and finish per request; each tool's requests are matched to them (arrival just after the tool's
send, same prompt tokens), so a difference between the tools splits into what the engine did for
their requests and what each tool's clock added on top."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # sampled; one trace for all
MATCH_WINDOW_S = 2.0  # the engine sees a request at most this long after the tool sent it


@dataclass(frozen=True)
class Timed:
    """One request on a wall clock (unix seconds): sent/arrived, first content, last content."""

    start: float
    first: float
    last: float
    prompt_tokens: int


def span_time(text: str) -> float:
    """A console-exporter timestamp (ISO 8601, `Z`) as unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def console_spans(log: str) -> list[dict[str, Any]]:
    """Every span the OTel console exporter wrote into `log` (pretty JSON objects among other lines)."""
    decoder, spans, i = json.JSONDecoder(), [], log.find("{\n")
    while i >= 0:
        try:
            span, end = decoder.raw_decode(log, i)
        except json.JSONDecodeError:  # a span still being written at the end of the log
            break
        spans.append(span)
        i = log.find("{\n", end)
    return spans


def engine_requests(log: str) -> list[Timed]:
    """The engine's root spans (`engine <model>`) from a console-exporter log, with the prefill span's
    end as the first token (the engine stamps it at the first output that carries text)."""
    spans = console_spans(log)
    prefill_end = {s["parent_id"]: span_time(s["end_time"]) for s in spans if s["name"] == "engine.prefill"}
    return [
        Timed(
            span_time(s["start_time"]),
            prefill_end.get(s["context"]["span_id"], float("nan")),
            span_time(s["end_time"]),
            int(s["attributes"]["gen_ai.usage.input_tokens"]),
        )
        for s in spans
        if s["name"].startswith("engine ") and not s["attributes"].get("hybridgw.engine.aborted")
    ]


def ours(results: Path) -> list[Timed]:
    """`hybridgw bench`'s measured requests (results.json; chunk times are on the run's clock)."""
    rows = json.loads(results.read_text())["requests"]
    return [
        Timed(
            r["wall_time"],
            r["wall_time"] + r["ttft_s"],
            r["wall_time"] - r["send_s"] + r["chunk_s"][-1],
            r["prompt_tokens"],
        )
        for r in rows
        if not r["warmup"] and r["error"] is None
    ]


def aiperf(records: Path) -> list[Timed]:
    """AIPerf's profiling requests (profile_export.jsonl: start ns, TTFT, every inter-chunk gap)."""
    found = []
    for line in records.read_text().splitlines():
        d = json.loads(line)
        meta, m = d["metadata"], d["metrics"]
        if meta["benchmark_phase"] == "warmup" or "time_to_first_token" not in m:
            continue
        start = meta["request_start_ns"] / 1e9
        first = start + m["time_to_first_token"]["value"] / 1000
        found.append(
            Timed(
                start,
                first,
                first + sum(m["inter_chunk_latency"]["value"]) / 1000,
                int(m["usage_prompt_tokens"]["value"]),
            )
        )
    return found


def matched(tool: list[Timed], engine: list[Timed]) -> list[tuple[Timed, Timed]]:
    """Each tool request with the first engine request that arrived after it, same prompt tokens."""
    free, pairs = sorted(engine, key=lambda e: e.start), []
    for t in sorted(tool, key=lambda t: t.start):
        e = next(
            (
                e
                for e in free
                if 0 <= e.start - t.start < MATCH_WINDOW_S and e.prompt_tokens == t.prompt_tokens
            ),
            None,
        )
        if e is not None:
            free.remove(e)
            pairs.append((t, e))
    return pairs


def compare(tool: list[Timed], engine: list[Timed]) -> dict[str, float]:
    """Medians (ms) over one tool's matched requests: the engine's own TTFT for them, the tool's, what
    the tool adds to TTFT, and the tool's first-to-last content span ÷ the engine's first-to-finish."""
    pairs = matched(tool, engine)
    if not pairs:
        return {"matched": 0.0}
    med = statistics.median
    return {
        "matched": float(len(pairs)),
        "eng_ttft_p50": med(e.first - e.start for _, e in pairs) * 1000,
        "tool_ttft_p50": med(t.first - t.start for t, _ in pairs) * 1000,
        "ttft_added": med((t.first - t.start) - (e.first - e.start) for t, e in pairs) * 1000,
        "decode_vs_eng": med((t.last - t.first) / (e.last - e.first) for t, e in pairs if e.last > e.first),
    }
