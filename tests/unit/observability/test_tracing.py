"""Spans read back from the in-memory exporter: GenAI attributes, the first-token event, and engine
spans joining the gateway's trace through a W3C traceparent header."""
from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from observability.tracing import (
    FIRST_TOKEN_EVENT,
    EngineTimeline,
    TracingConfig,
    add_first_token_event,
    build_tracing,
    extract_context,
    inject_traceparent,
    record_engine_spans,
    set_usage_attributes,
    start_request_span,
    tracing_config_from_env,
)
from tests.unit.observability.conftest import record


def test_request_span_carries_genai_and_hybridgw_attributes() -> None:
    tracing = build_tracing(TracingConfig(exporter="memory"))
    tracer = tracing.provider.get_tracer("test")
    span = start_request_span(tracer, operation="chat", request_model="gpt-4o-mini", team="alpha", request_id="r1")
    add_first_token_event(span, 0.042)
    rec = record(request_id="r1", provider="openai", finish_reason="stop", kv_bytes=4096, ttft_s=0.042)
    set_usage_attributes(span, rec)
    span.end()
    (finished,) = tracing.memory.get_finished_spans()  # type: ignore[union-attr]
    assert finished.name == "chat gpt-4o-mini" and finished.kind == SpanKind.SERVER
    attrs = finished.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attrs["gen_ai.usage.input_tokens"] == 100 and attrs["gen_ai.usage.output_tokens"] == 20
    assert attrs["gen_ai.response.time_to_first_chunk"] == 0.042
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attrs["hybridgw.team"] == "alpha" and attrs["hybridgw.rule"] == "default"
    assert attrs["hybridgw.backend"] == "openai" and attrs["hybridgw.kv_bytes"] == 4096
    assert attrs["hybridgw.estimated.input_tokens"] == 98 and attrs["hybridgw.estimated.output_tokens"] == 32
    assert [e.name for e in finished.events] == [FIRST_TOKEN_EVENT]
    assert finished.status.status_code == StatusCode.UNSET


def test_failed_request_marks_the_span_as_error() -> None:
    tracing = build_tracing(TracingConfig(exporter="memory"))
    span = tracing.provider.get_tracer("t").start_span("chat m")
    set_usage_attributes(span, record(status="error", error_type="upstream_timeout", ttft_s=None))
    span.end()
    (finished,) = tracing.memory.get_finished_spans()  # type: ignore[union-attr]
    assert finished.status.status_code == StatusCode.ERROR
    assert finished.attributes["error.type"] == "upstream_timeout"
    assert "gen_ai.response.time_to_first_chunk" not in finished.attributes


def test_engine_spans_join_the_gateway_trace() -> None:
    tracing = build_tracing(TracingConfig(exporter="memory"))
    tracer = tracing.provider.get_tracer("gateway")
    request_span = start_request_span(tracer, operation="chat", request_model="smollm2", team="a", request_id="r")
    upstream = tracer.start_span("upstream local", context=trace.set_span_in_context(request_span),
                                 kind=SpanKind.CLIENT)
    headers = inject_traceparent({}, upstream)
    assert headers["traceparent"].startswith("00-")
    # ...the engine process receives `headers` with the HTTP request:
    t0 = 1_800_000_000_000_000_000
    record_engine_spans(tracing.provider.get_tracer("engine"), {"Traceparent": headers["traceparent"]},
                        EngineTimeline(t0, t0 + 2_000_000, t0 + 30_000_000, t0 + 90_000_000, 12, 8),
                        model="smollm2")
    upstream.end()
    request_span.end()
    spans = {s.name: s for s in tracing.memory.get_finished_spans()}  # type: ignore[union-attr]
    assert set(spans) == {"chat smollm2", "upstream local", "engine smollm2", "engine.queue", "engine.prefill",
                          "engine.decode"}
    trace_ids = {s.context.trace_id for s in spans.values()}
    assert len(trace_ids) == 1
    assert spans["engine smollm2"].parent.span_id == spans["upstream local"].context.span_id
    for phase in ("engine.queue", "engine.prefill", "engine.decode"):
        assert spans[phase].parent.span_id == spans["engine smollm2"].context.span_id
    assert spans["engine.prefill"].end_time - spans["engine.prefill"].start_time == 28_000_000


def test_extract_without_traceparent_gives_a_root_context() -> None:
    assert trace.get_current_span(extract_context({})).get_span_context().is_valid is False


def test_exporter_none_records_nothing_and_config_is_validated() -> None:
    tracing = build_tracing(TracingConfig())
    assert tracing.memory is None
    assert not tracing.provider.get_tracer("t").start_span("x").is_recording()
    with pytest.raises(ValueError):
        TracingConfig(exporter="zipkin")
    assert tracing_config_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}).exporter == "otlp"
    assert tracing_config_from_env({"HYBRIDGW_TRACES": "console"}).exporter == "console"


def _sampled(config: TracingConfig, traceparent: str | None = None) -> bool:
    tracer = build_tracing(config).provider.get_tracer("t")
    context = extract_context({"traceparent": traceparent}) if traceparent else None
    return tracer.start_span("s", context=context).get_span_context().trace_flags.sampled


def test_otel_traces_sampler_env_picks_the_head_sampler() -> None:
    sampled_parent, unsampled_parent = (f"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0{f}" for f in "10")
    env = {"HYBRIDGW_TRACES": "memory"}
    default = tracing_config_from_env(env)
    assert _sampled(default) and not _sampled(default, unsampled_parent)  # unchanged: all roots, parent's word
    never = tracing_config_from_env({**env, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                     "OTEL_TRACES_SAMPLER_ARG": "0"})
    assert not _sampled(never) and _sampled(never, sampled_parent)  # the caller's decision still holds
    ratio_only = tracing_config_from_env({**env, "OTEL_TRACES_SAMPLER": "TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG": "0"})
    assert not _sampled(ratio_only, sampled_parent)
    assert _sampled(tracing_config_from_env({**env, "OTEL_TRACES_SAMPLER": "always_on"}), unsampled_parent)
    assert not _sampled(tracing_config_from_env({**env, "OTEL_TRACES_SAMPLER": "always_off"}))
    # As the SDK: an unknown name is parentbased_always_on, a bad ratio 1.0.
    assert tracing_config_from_env({**env, "OTEL_TRACES_SAMPLER": "jaeger_remote"}).sampler == "parentbased_always_on"
    assert tracing_config_from_env({**env, "OTEL_TRACES_SAMPLER": "traceidratio",
                                    "OTEL_TRACES_SAMPLER_ARG": "half"}).sample_ratio == 1.0
    with pytest.raises(ValueError):
        TracingConfig(sample_ratio=1.5)


def test_inject_writes_what_the_w3c_propagator_writes() -> None:
    tracer = build_tracing(TracingConfig(exporter="memory")).provider.get_tracer("gateway")
    remote = extract_context({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                              "tracestate": "vendor=x,other=y"})
    for parent in (None, remote):
        span = tracer.start_span("upstream", context=parent)
        want: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(want, context=trace.set_span_in_context(span))
        assert inject_traceparent({}, span) == want and want["traceparent"].startswith("00-")
    assert inject_traceparent({}, context=remote)["tracestate"] == "vendor=x,other=y"
    assert inject_traceparent({}, trace.INVALID_SPAN) == {}
