"""bench/replay_intake.py: the engine's spans as the engine's own tracer writes them (console exporter),
read back with their queue attributes, matched to the gateway's ledger rows, and the prompt steps set
against a performance model."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from local_engine.queue_wait import QueueWait
from local_engine.trace_context import parse_traceparent
from local_engine.tracing import RequestTimes, RequestTracer
from policies.perf_model import EngineModel

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from bench import replay_intake  # noqa: E402  (a script folder, found from the project root)

T0 = 1_796_000_000.0  # unix seconds
PARENT = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def ns(s: float) -> int:
    return int(round(s * 1e9))


def engine_log(requests: list[tuple[float, QueueWait, float, int]]) -> str:
    """(submitted, its wait, first token handed on, prompt tokens) → the engine's console log."""
    out = io.StringIO()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out)))
    tracer = RequestTracer(provider.get_tracer("engine"), "tiny-random")
    for arrived, wait, first, prompt in requests:
        scheduled = wait.taken_in_ns + 1_000_000
        tracer.record(PARENT, RequestTimes(ns(arrived), scheduled, ns(first), ns(first + 0.5), prompt, 8, queue_wait=wait))
    return "engine ready\n" + out.getvalue()


def test_a_request_is_split_into_intake_queue_prefill_and_handoff() -> None:
    wait = QueueWait(ns(T0 + 1.10), 3, 2, 1, 1, ns(T0 + 1.40), 20, 180)
    spans = replay_intake.queue_spans(engine_log([(T0 + 1.0, wait, T0 + 1.45, 120)]))
    ledger = [{"backend": "local", "time": T0 + 0.98, "ttft_s": 0.50, "upstream_latency_s": 0.49, "prompt_tokens": 120},
              {"backend": "openai", "time": T0 + 0.99, "ttft_s": 0.3, "upstream_latency_s": 0.3, "prompt_tokens": 120}]
    (row,) = replay_intake.matched(ledger, spans)
    assert row["to engine"] == pytest.approx(0.01, abs=1e-4)
    assert row["intake"] == pytest.approx(0.10, abs=1e-4)
    assert row["queue"] == pytest.approx(0.001, abs=1e-4)
    assert row["prefill"] == pytest.approx(0.299, abs=1e-4)
    assert row["handoff"] == pytest.approx(0.05, abs=1e-4)
    assert row["back"] == pytest.approx(0.03, abs=1e-4)
    assert (row["ahead"], row["steps"], row["no_admit"], row["prefill_steps"]) == (3, 2, 1, 1)


def test_prompt_steps_are_set_against_the_model_once_a_step() -> None:
    model = EngineModel(prefill_fixed_s=0.1, prefill_per_token_s=0.0, decode_fixed_s=0.05, decode_per_seq_s=0.01,
                        decode_per_context_token_s=0.0)
    same_step = QueueWait(ns(T0 + 1.0), 0, 0, 0, 1, ns(T0 + 1.601), 20, 200)  # two requests in one step
    chunked = QueueWait(ns(T0 + 2.0), 0, 0, 0, 3, ns(T0 + 3.0), 20, 64)  # over 3 steps: not a whole step's time
    spans = replay_intake.queue_spans(engine_log([(T0 + 0.9, same_step, T0 + 1.7, 100), (T0 + 0.9, same_step, T0 + 1.7, 100),
                                                  (T0 + 1.9, chunked, T0 + 3.1, 150)]))
    table = replay_intake.prompt_steps(spans, model)
    assert table[2:] == ["| 129-256 | 1 | 20 | 0.600 | 0.300 | 2.00 |"]
