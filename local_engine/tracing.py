"""Engine spans for requests that arrive with a W3C traceparent (the gateway sends one): an engine span
(with its queue's inside as attributes) and queue, prefill, decode children, recorded when the request
ends, in the caller's trace. Exporters follow HYBRIDGW_TRACES / OTEL_EXPORTER_OTLP_ENDPOINT, as the gateway's."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace

from local_engine.queue_wait import QueueWait
from local_engine.trace_context import TraceParent
from observability.tracing import (
    EngineTimeline,
    Tracing,
    build_tracing,
    record_engine_spans,
    tracing_config_from_env,
)


@dataclass(frozen=True)
class RequestTimes:
    """One request's life in the engine, unix-epoch nanoseconds."""

    arrived_ns: int
    scheduled_ns: int  # 0: never scheduled (aborted while queued)
    first_token_ns: int  # 0: no token yet
    finished_ns: int
    prompt_tokens: int
    completion_tokens: int
    aborted: bool = False
    queue_wait: QueueWait | None = None  # how the step loop took it in and kept it waiting


class RequestTracer:
    """Turns finished requests into spans; does nothing for requests without a sampled traceparent."""

    def __init__(self, tracer: trace.Tracer, model: str) -> None:
        self.tracer = tracer
        self.model = model

    def record(self, parent: TraceParent | None, times: RequestTimes) -> None:
        if parent is None or not parent.sampled:
            return
        end = times.finished_ns
        scheduled = times.scheduled_ns or end
        timeline = EngineTimeline(arrived_ns=times.arrived_ns, scheduled_ns=scheduled,
                                  first_token_ns=times.first_token_ns or end, finished_ns=end,
                                  prompt_tokens=times.prompt_tokens, completion_tokens=times.completion_tokens)
        record_engine_spans(self.tracer, {"traceparent": parent.header()}, timeline, model=self.model,
                            attributes={"hybridgw.engine.aborted": times.aborted, **queue_attributes(times.queue_wait)})


def queue_attributes(wait: QueueWait | None) -> dict[str, int]:
    """The engine span's attributes for its wait: when the step loop took the request in (unix ns; the span
    starts when the server submitted it), requests ahead, steps before its first, its prompt's steps, and
    when the step that sampled its first token ended (the prefill span ends when the server handed it on)."""
    if wait is None:
        return {}
    return {"hybridgw.engine.queue.taken_in_ns": wait.taken_in_ns, "hybridgw.engine.queue.ahead": wait.ahead,
            "hybridgw.engine.queue.steps": wait.steps, "hybridgw.engine.queue.steps_no_admit": wait.steps_no_admit,
            "hybridgw.engine.prefill.steps": wait.prefill_steps, "hybridgw.engine.prefill.sampled_ns": wait.sampled_ns,
            "hybridgw.engine.prefill.first_step_decodes": wait.first_step_decodes,
            "hybridgw.engine.prefill.first_step_prompt_tokens": wait.first_step_prompt_tokens}


def engine_tracing(environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """The engine's tracing from the environment; None when traces are off (the default)."""
    config = tracing_config_from_env(environ, service_name="hybridgw-engine")
    return None if config.exporter == "none" else build_tracing(config)
