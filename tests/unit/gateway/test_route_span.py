"""The route decision's span: a recording child of a sampled request span, and no span at all (not even a
NonRecordingSpan) under a sampled-out one, whatever the sampler would say. Real OTel SDK tracer, in memory."""
from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from gateway.route_plan import route_span


def _tracer(sampler: object) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def test_a_sampled_request_gets_its_route_span() -> None:
    tracer, exporter = _tracer(ALWAYS_ON)
    parent = tracer.start_span("chat m")
    span = route_span(tracer, parent)
    assert span.is_recording()
    span.end()
    parent.end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["route"].parent is not None
    assert spans["route"].parent.span_id == spans["chat m"].context.span_id


def test_a_sampled_out_request_makes_no_route_span() -> None:
    tracer, exporter = _tracer(ALWAYS_OFF)
    parent = tracer.start_span("chat m")
    assert not parent.is_recording()
    # The tracer would have made a NonRecordingSpan with an id of its own; none is made at all.
    assert route_span(tracer, parent) is trace.INVALID_SPAN
    assert route_span(tracer, None) is trace.INVALID_SPAN
    assert exporter.get_finished_spans() == ()
