"""The per-stage table of a cProfile'd gateway (bench/hot_path.py --profile): each stage's cumulative
time on the event-loop thread per request, from the functions that implement it. Coroutines count
only while they run (cProfile sees each resume as a call), and the timer is the thread's CPU clock, so
awaiting the upstream, idling in epoll and waiting for the GIL cost nothing here."""
from __future__ import annotations

import pstats
from pathlib import Path

# stage → (path suffix, function name) whose cumulative times add up to it; none nests in another
# of the same stage. "upstream call" includes the HTTP client; "record" is finish() without its spans.
STAGES: list[tuple[str, list[tuple[str, str]]]] = [
    ("auth (key lookup, cached)", [("gateway/services.py", "authenticate")]),
    ("body read + JSON parse + schema", [("gateway/request_body.py", "read_json_body"),
                                         ("gateway/schemas.py", "parse_body")]),
    ("alias checks", [("gateway/catalog.py", "check_alias"), ("gateway/auth.py", "check_key_alias")]),
    ("token count", [("gateway/token_count.py", "measure_prompt")]),
    ("facts", [("policies/live_book.py", "live_state"), ("policies/decider.py", "build_facts")]),
    ("decide", [("policies/decider.py", "route")]),
    ("reserve (limits)", [("gateway/proxy.py", "_reserve")]),
    ("upstream body build", [("gateway/upstream_body.py", "build")]),
    ("upstream call (HTTP client)", [("gateway/backends/openai_http.py", "complete"),
                                     ("gateway/backends/openai_http.py", "stream")]),
    ("trace (spans: start, attributes, end)", [("opentelemetry/sdk/trace/__init__.py", "start_span"),
                                               ("gateway/usage_emit.py", "_end_spans"),
                                               ("gateway/route_plan.py", "_describe_decision"),
                                               ("observability/tracing.py", "inject_traceparent")]),
    ("record (usage record, access log, settle)", [("gateway/usage_emit.py", "finish")]),
    ("relay (streamed: SSE frames, tally, sends)", [("gateway/streaming.py", "__call__")]),
]
MINUS = {"record (usage record, access log, settle)": [("gateway/usage_emit.py", "_end_spans")]}
# the relay's own: without the upstream reads and the record it makes at the end (stages of their own)
MINUS_FROM = {"relay (streamed: SSE frames, tally, sends)": [
    (("gateway/backends/openai_http.py", "stream"), ("gateway/streaming.py", "_relay")),
    (("gateway/usage_emit.py", "finish"), ("gateway/streaming.py", "__call__"))]}


# ... and what the stage's callers do outside those functions: the route and upstream spans' ends and
# parent contexts (fn, caller): fn's cumulative time in the calls caller made.
_END, _IN_CONTEXT = ("opentelemetry/sdk/trace/__init__.py", "end"), ("opentelemetry/trace/propagation/__init__.py",
                                                                     "set_span_in_context")
PLUS_FROM = {"trace (spans: start, attributes, end)": [
    (_END, ("gateway/route_plan.py", "plan_route")), (_END, ("gateway/attempts.py", "started")),
    (_IN_CONTEXT, ("gateway/route_plan.py", "plan_route")), (_IN_CONTEXT, ("gateway/attempts.py", "started"))]}


def _cumulative(stats: dict, fns: list[tuple[str, str]]) -> float:
    return sum(ct for (file, _, name), (_, _, _, ct, _) in stats.items()
               if any(file.endswith(suffix) and name == fn for suffix, fn in fns))


def _called_from(stats: dict, fn: tuple[str, str], caller: tuple[str, str]) -> float:
    """Cumulative time of `fn` in the calls `caller` made."""
    total = 0.0
    for (file, _, name), (_, _, _, _, callers) in stats.items():
        if file.endswith(fn[0]) and name == fn[1]:
            total += sum(v[3] for (cf, _, cn), v in callers.items() if cf.endswith(caller[0]) and cn == caller[1])
    return total


def stage_table(path: Path) -> str:
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    requests = sum(nc for (file, _, name), (_, nc, _, _, _) in stats.items()
                   if file.endswith("gateway/exchange.py") and name == "begin")
    busy = sum(tt for (_, _, tt, _, _) in stats.values())  # the thread's CPU (the loop's C code included)
    rows, staged = [], 0.0
    for stage, fns in STAGES:
        t = _cumulative(stats, fns) - _cumulative(stats, MINUS.get(stage, []))
        t -= sum(_called_from(stats, fn, caller) for fn, caller in MINUS_FROM.get(stage, []))
        t += sum(_called_from(stats, fn, caller) for fn, caller in PLUS_FROM.get(stage, []))
        staged += t
        rows.append((stage, t))
    rows.append(("the rest: uvicorn, Starlette/FastAPI layers, ASGI sends, the handler's glue", busy - staged))
    lines = [f"cProfile (timer: the event-loop thread's CPU clock), {requests} requests",
             "| stage | µs per request (under cProfile) | share |", "|---|---|---|"]
    for stage, t in rows:
        lines.append(f"| {stage} | {t / requests * 1e6:.0f} | {t / busy:.0%} |")
    lines.append(f"| **total** | {busy / requests * 1e6:.0f} | 100% |")
    return "\n".join(lines)
