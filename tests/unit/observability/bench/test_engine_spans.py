"""bench/engine_spans.py: the engine's spans, written by the engine's own span code to the console
exporter, read back per request and matched to a tool's requests (arrival after send, same prompt)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from observability.tracing import EngineTimeline, record_engine_spans

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from bench import engine_spans  # noqa: E402  (a script folder, found from the project root)
from bench.engine_spans import Timed  # noqa: E402

T0 = 1_796_000_000.0  # unix seconds


def console_log(timelines: list[EngineTimeline]) -> str:
    out = io.StringIO()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out)))
    tracer = provider.get_tracer("test")
    for t in timelines:
        record_engine_spans(tracer, {"traceparent": engine_spans.TRACEPARENT}, t, model="tiny-random")
    return "engine ready on http://127.0.0.1:1/v1\n" + out.getvalue()


def ns(s: float) -> int:
    return int(round(s * 1e9))


def timeline(arrive: float, first: float, finish: float, prompt: int) -> EngineTimeline:
    return EngineTimeline(ns(arrive), ns(arrive + 0.001), ns(first), ns(finish), prompt, 16)


def test_each_request_is_read_back_with_its_first_token_and_finish() -> None:
    log = console_log([timeline(T0 + 1.0, T0 + 1.2, T0 + 1.5, 542), timeline(T0 + 3.0, T0 + 3.05, T0 + 3.4, 558)])
    got = sorted(engine_spans.engine_requests(log), key=lambda t: t.start)
    assert [t.prompt_tokens for t in got] == [542, 558]
    assert got[0].start == pytest.approx(T0 + 1.0, abs=1e-5)
    assert got[0].first == pytest.approx(T0 + 1.2, abs=1e-5)
    assert got[1].last == pytest.approx(T0 + 3.4, abs=1e-5)
    cut = log[: log.rindex('"name"')]  # the last span half written: the complete ones still count
    assert [t.prompt_tokens for t in engine_spans.engine_requests(cut)] == [542]


def test_tool_requests_match_by_arrival_after_send_and_prompt_tokens() -> None:
    engine = [
        Timed(T0 + 1.004, T0 + 1.100, T0 + 1.300, 542),  # ours
        Timed(T0 + 1.006, T0 + 1.200, T0 + 1.400, 558),  # the other tool's, arrived just after
        Timed(T0 + 9.000, T0 + 9.100, T0 + 9.300, 542),  # too late to be the answer to a send at T0 + 1
    ]
    tool = [Timed(T0 + 1.000, T0 + 1.110, T0 + 1.320, 542)]
    pairs = engine_spans.matched(tool, engine)
    assert pairs == [(tool[0], engine[0])]
    got = engine_spans.compare(tool, engine)
    assert got["matched"] == 1
    assert got["eng_ttft_p50"] == pytest.approx(96.0, abs=0.01)  # 1.100 - 1.004
    assert got["ttft_added"] == pytest.approx(14.0, abs=0.01)  # the tool's 110 ms less the engine's 96
    assert got["decode_vs_eng"] == pytest.approx(0.21 / 0.2)
    assert engine_spans.compare([Timed(T0, T0 + 1, T0 + 2, 7)], engine) == {"matched": 0.0}
