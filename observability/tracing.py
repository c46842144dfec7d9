"""Tracing: the TracerProvider factory (exporter none / console / OTLP over HTTP / in-memory), the
GenAI semantic-convention attributes set from a UsageRecord, and W3C traceparent inject/extract so
the engine's spans join the gateway's trace. No global provider or propagator is ever set."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from observability.trace_recorder import RecordingTracerProvider
from observability.usage import UsageRecord

EXPORTERS = ("none", "console", "otlp", "memory")
# OTEL_TRACES_SAMPLER's built-in names, as the SDK reads them (opentelemetry.sdk.trace.sampling); the
# ratio only matters to the *traceidratio ones.
SAMPLERS: dict[str, Callable[[float], Sampler]] = {
    "always_on": lambda _: ALWAYS_ON, "always_off": lambda _: ALWAYS_OFF,
    "parentbased_always_on": lambda _: DEFAULT_ON, "parentbased_always_off": lambda _: DEFAULT_OFF,
    "traceidratio": TraceIdRatioBased, "parentbased_traceidratio": ParentBasedTraceIdRatio,
}
FIRST_TOKEN_EVENT = "gen_ai.first_token"


@dataclass(frozen=True)
class TracingConfig:
    exporter: str = "none"  # one of EXPORTERS
    otlp_endpoint: str | None = None  # e.g. http://collector:4318/v1/traces; None: OTEL_EXPORTER_OTLP_* env
    service_name: str = "hybridgw"
    sample_ratio: float = 1.0  # of root traces; children follow their parent's decision
    sampler: str = "parentbased_traceidratio"  # one of SAMPLERS (OTEL_TRACES_SAMPLER's names)

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(f"tracing exporter must be one of {EXPORTERS}, not {self.exporter!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"trace sampler must be one of {sorted(SAMPLERS)}, not {self.sampler!r}")
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError(f"trace sample ratio must be within [0, 1], not {self.sample_ratio}")


def tracing_config_from_env(environ: Mapping[str, str] = os.environ, service_name: str = "hybridgw") -> TracingConfig:
    """HYBRIDGW_TRACES=none|console|otlp (otlp also when OTEL_EXPORTER_OTLP_ENDPOINT is set); the head
    sampler from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, else HYBRIDGW_TRACE_SAMPLE_RATIO."""
    exporter = environ.get("HYBRIDGW_TRACES") or ("otlp" if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "none")
    ratio = float(environ.get("HYBRIDGW_TRACE_SAMPLE_RATIO", "1.0"))
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler:
        sampler, ratio = sampler_from_env(sampler, environ.get("OTEL_TRACES_SAMPLER_ARG", ""))
    return TracingConfig(exporter=exporter, service_name=service_name, sample_ratio=ratio,
                         sampler=sampler or "parentbased_traceidratio")


@dataclass(frozen=True)
class Tracing:
    provider: trace.TracerProvider  # pass to create_app(tracer_provider=...)
    memory: InMemorySpanExporter | None = None  # set for exporter "memory" (tests read spans here)

    def shutdown(self) -> None:
        """Flush queued spans and stop the exporter (at process exit)."""
        if isinstance(self.provider, TracerProvider):
            self.provider.shutdown()


def build_tracing(config: TracingConfig) -> Tracing:
    if config.exporter == "none":
        return Tracing(trace.NoOpTracerProvider())
    provider = RecordingTracerProvider(  # the SDK's, with cheaper spans (observability/trace_recorder.py)
        resource=Resource.create({"service.name": config.service_name}),
        sampler=SAMPLERS[config.sampler](config.sample_ratio),
    )
    if config.exporter == "memory":
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))  # spans readable as soon as they end
        return Tracing(provider, memory)
    if config.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        # Imports the OTLP exporter (requests, protobuf): only when traces go over OTLP.
        from observability.trace_export import CompactOTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(CompactOTLPSpanExporter(endpoint=config.otlp_endpoint)))
    return Tracing(provider)


def sampler_from_env(name: str, arg: str) -> tuple[str, float]:
    """OTEL_TRACES_SAMPLER / _ARG as the SDK reads them: an unknown name means parentbased_always_on
    (with a warning), a ratio that is missing or not a number means 1.0."""
    if name not in SAMPLERS:
        logging.getLogger(__name__).warning("unknown OTEL_TRACES_SAMPLER %r: using parentbased_always_on", name)
        return "parentbased_always_on", 1.0
    try:
        ratio = float(arg) if "traceidratio" in name else 1.0
    except ValueError:
        ratio = 1.0
    return name, ratio


def usage_attributes(record: UsageRecord) -> dict[str, Any]:
    """GenAI semconv + hybridgw.* attributes describing one finished request."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": record.operation,
        "gen_ai.provider.name": record.provider or record.backend or "none",
        "gen_ai.request.model": record.model_alias,
        "gen_ai.response.model": record.model,
        "gen_ai.usage.input_tokens": record.prompt_tokens,
        "gen_ai.usage.output_tokens": record.completion_tokens,
        "hybridgw.request_id": record.request_id,
        "hybridgw.client_request_id": record.client_request_id,  # "" when the client sent none
        "hybridgw.team": record.team,
        "hybridgw.key_id": record.key_id,
        "hybridgw.rule": record.rule,
        "hybridgw.backend": record.backend,
        "hybridgw.status": record.status,
        "hybridgw.usage_source": record.usage_source,
        "hybridgw.estimated.input_tokens": record.estimated_prompt_tokens,
        "hybridgw.estimated.output_tokens": record.estimated_completion_tokens,
        "hybridgw.kv_bytes": record.kv_bytes,
        "hybridgw.cost_usd": record.cost_usd,
        "hybridgw.e2e_s": record.e2e_s,
        "http.response.status_code": record.http_status,
    }
    # the optional ones, each when known (one test per field: this runs on the event loop per request)
    if record.ttft_s is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = record.ttft_s
    if record.itl_p50_s is not None:
        attrs["hybridgw.itl.p50_s"] = record.itl_p50_s
    if record.itl_p95_s is not None:
        attrs["hybridgw.itl.p95_s"] = record.itl_p95_s
    if record.itl_max_s is not None:
        attrs["hybridgw.itl.max_s"] = record.itl_max_s
    if record.upstream_latency_s is not None:
        attrs["hybridgw.upstream_latency_s"] = record.upstream_latency_s
    if record.finish_reason:
        attrs["gen_ai.response.finish_reasons"] = [record.finish_reason]
    if record.status != "ok":
        attrs["error.type"] = record.error_type or record.status
    return attrs


def set_usage_attributes(span: Span, record: UsageRecord) -> None:
    """Describe the finished request on its span (call before span.end())."""
    if not span.is_recording():
        return
    span.set_attributes(usage_attributes(record))
    if record.status != "ok":
        span.set_status(StatusCode.ERROR, record.error_type or record.status)


def add_first_token_event(span: Span, ttft_s: float, timestamp_ns: int | None = None) -> None:
    """Mark the first content chunk on the request span (timestamp defaults to now)."""
    if span.is_recording():
        span.add_event(FIRST_TOKEN_EVENT, {"gen_ai.response.time_to_first_chunk": ttft_s}, timestamp=timestamp_ns)


def start_request_span(tracer: trace.Tracer, *, operation: str, request_model: str, team: str,
                       request_id: str, context: Context | None = None) -> Span:
    """The gateway's span for one request, named per the conventions ("chat gpt-4o-mini")."""
    return tracer.start_span(
        f"{operation} {request_model}", context=context, kind=SpanKind.SERVER,
        attributes={"gen_ai.operation.name": operation, "gen_ai.request.model": request_model,
                    "hybridgw.team": team, "hybridgw.request_id": request_id},
    )


def inject_traceparent(headers: MutableMapping[str, str], span: Span | None = None,
                       context: Context | None = None) -> MutableMapping[str, str]:
    """Add `traceparent` (and `tracestate`) for the span (or context) to outgoing headers: W3C's format,
    as TraceContextTextMapPropagator writes it, without a Context and a propagator per request."""
    ctx = (span if span is not None else trace.get_current_span(context)).get_span_context()
    if ctx.is_valid:
        headers["traceparent"] = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
        if ctx.trace_state:
            headers["tracestate"] = ctx.trace_state.to_header()
    return headers


def extract_context(headers: Mapping[str, str]) -> Context:
    """The remote parent carried by incoming headers (an empty context when there is none)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return TraceContextTextMapPropagator().extract(lowered)


@dataclass(frozen=True)
class EngineTimeline:
    """One request's life inside an engine, as unix-epoch nanoseconds (time.time_ns() clock)."""

    arrived_ns: int  # the engine server received it
    scheduled_ns: int  # first scheduled: the end of the queue wait
    first_token_ns: int  # prefill done, first token sampled
    finished_ns: int  # last token sampled (or aborted)
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache


def start_engine_span(tracer: trace.Tracer, headers: Mapping[str, str], name: str,
                      attributes: Mapping[str, Any] | None = None, start_time_ns: int | None = None) -> Span:
    """A live engine span whose parent is the gateway span named by the request's traceparent."""
    return tracer.start_span(name, context=extract_context(headers), kind=SpanKind.SERVER,
                             attributes=dict(attributes or {}), start_time=start_time_ns)


def record_engine_spans(tracer: trace.Tracer, headers: Mapping[str, str], timeline: EngineTimeline,
                        *, model: str, attributes: Mapping[str, Any] | None = None) -> None:
    """After the fact: one engine span (child of the gateway's upstream span) with queue, prefill and
    decode children, from the timestamps the engine kept while serving the request."""
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "hybridgw.engine",
             "gen_ai.response.model": model, "gen_ai.usage.input_tokens": timeline.prompt_tokens,
             "gen_ai.usage.output_tokens": timeline.completion_tokens,
             "hybridgw.engine.cached_prompt_tokens": timeline.cached_prompt_tokens, **(attributes or {})}
    root = start_engine_span(tracer, headers, f"engine {model}", attrs, timeline.arrived_ns)
    inside = trace.set_span_in_context(root)
    phases = (("engine.queue", timeline.arrived_ns, timeline.scheduled_ns),
              ("engine.prefill", timeline.scheduled_ns, timeline.first_token_ns),
              ("engine.decode", timeline.first_token_ns, timeline.finished_ns))
    for name, start, end in phases:
        tracer.start_span(name, context=inside, start_time=start).end(end_time=max(start, end))
    root.end(end_time=timeline.finished_ns)
