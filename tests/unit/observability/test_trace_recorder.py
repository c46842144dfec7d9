"""RecordingSpan (observability/trace_recorder.py) records what the SDK's span records: the same calls on
both providers (same ids, times, sampler, limits) give the same OTLP message — attribute cleaning, a key
set twice, status rules, events, links, exceptions, limits, a remote parent, an unsampled root."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from observability.trace_recorder import RecordingSpan, RecordingTracerProvider
from observability.tracing import extract_context

T0 = 1_800_000_000_000_000_000


class Counting(IdGenerator):
    def __init__(self) -> None:
        self.n = 0

    def generate_span_id(self) -> int:
        self.n += 1
        return self.n

    def generate_trace_id(self) -> int:
        self.n += 1
        return (0xABC << 64) + self.n


def run(provider_type: Callable[..., TracerProvider]) -> InMemorySpanExporter:
    provider = provider_type(resource=Resource.create({"service.name": "t"}), id_generator=Counting(),
                             sampler=ParentBasedTraceIdRatio(1.0), span_limits=SpanLimits(max_span_attributes=6))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("hybridgw.gateway")
    remote = extract_context({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    root = tracer.start_span("POST /v1/chat/completions", context=remote, kind=SpanKind.SERVER, start_time=T0,
                             attributes={"gen_ai.operation.name": "chat", "n": 1})
    child = tracer.start_span("upstream up", context=trace.set_span_in_context(root), kind=SpanKind.CLIENT,
                              start_time=T0 + 1, links=[Link(root.get_span_context(), {"why": "retry"})])
    child.set_attributes({"list": ["a", "b"], "none": None, "obj": object, "": "empty key", "f": 0.5, "b": True})
    child.set_attribute("n", 2)
    child.set_attributes({"x1": 1, "x2": 2})  # over the limit of 6: the oldest go
    child.set_status(StatusCode.ERROR, "upstream_timeout")
    child.set_status(StatusCode.UNSET)  # ignored
    child.record_exception(ValueError("bad"), timestamp=T0 + 2)
    child.end(end_time=T0 + 3)
    child.set_attribute("late", 1)  # ended: ignored
    # a local parent's child: its start attributes kept (the sampler is not asked); new plain keys added at once
    route = tracer.start_span("route", context=trace.set_span_in_context(root), start_time=T0 + 1,
                              attributes={"hybridgw.rule": "r"})
    route.set_attributes({"s": "x", "targets": ["p", "q"], "pair": (1, 2.5), "i": 3, "ok": False})
    route.end(end_time=T0 + 2)
    root.update_name("chat m")
    root.add_event("gen_ai.first_token", {"gen_ai.response.time_to_first_chunk": 0.04}, timestamp=T0 + 2)
    root.set_attributes({"gen_ai.operation.name": "chat", "hybridgw.team": "red", "targets": ["up", None]})  # moves
    root.set_status(Status(StatusCode.OK))
    root.set_status(StatusCode.ERROR, "after OK: ignored")
    root.end(end_time=T0 + 4)
    local = tracer.start_span("route", start_time=T0 + 5)
    local.set_attributes({"k": 1, "": 2, "l": [1, 2], "o": object, "mixed": [1, "a"], "t": ("x",)})  # first set
    local.end(end_time=T0 + 6)
    big = tracer.start_span("big", start_time=T0 + 5)
    big.set_attributes({f"k{i}": i for i in range(8)})  # a first set over the cap: the oldest go
    big.end(end_time=T0 + 6)
    return memory


def test_same_spans_as_the_sdk() -> None:
    ours, sdks = run(RecordingTracerProvider), run(TracerProvider)
    assert all(isinstance(s, RecordingSpan) for s in ours.get_finished_spans())
    assert encode_spans(ours.get_finished_spans()) == encode_spans(sdks.get_finished_spans())
    child = ours.get_finished_spans()[0]
    assert "list" not in child.attributes and child.attributes["obj"] == str(object) and child.dropped_attributes == 3
    assert [e.name for e in child.events] == ["exception"] and child.status.status_code is StatusCode.ERROR
    def typed(memory: InMemorySpanExporter) -> list[list[tuple[str, type, object]]]:
        return [[(k, type(v), v) for k, v in span.attributes.items()] for span in memory.get_finished_spans()]
    assert typed(ours) == typed(sdks)  # lists kept as tuples, as the SDK's cleaning keeps them


def test_unsampled_parent_gives_a_non_recording_span_that_still_propagates() -> None:
    tracer = RecordingTracerProvider().get_tracer("t")
    context = extract_context({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"})
    span = tracer.start_span("s", context=context)
    assert not span.is_recording() and span.get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C


class AskedParentBased(ParentBasedTraceIdRatio):
    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.asked = 0

    def should_sample(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        self.asked += 1
        return super().should_sample(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_spans_under_a_local_span_follow_it_without_asking_the_sampler(ratio: float) -> None:
    """A request pays one sampler call (its root), not one per span: under a local parent ParentBased
    follows the parent's decision, so the recorder does without asking; same span contexts as the SDK's
    (a new span id, the parent's flags and trace state), and a sampled request's spans are the SDK's."""
    ours_sampler = AskedParentBased(ratio)
    spans, exported = [], []
    for provider_type, sampler in ((RecordingTracerProvider, ours_sampler), (TracerProvider, ParentBasedTraceIdRatio(ratio))):
        provider = provider_type(sampler=sampler, id_generator=Counting(), resource=Resource.create({"service.name": "t"}))
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("t")
        root = tracer.start_span("POST /v1/chat/completions", kind=SpanKind.SERVER, start_time=T0)
        route = tracer.start_span("route", context=trace.set_span_in_context(root), start_time=T0 + 1)
        upstream = tracer.start_span("upstream up", context=trace.set_span_in_context(root), kind=SpanKind.CLIENT,
                                     start_time=T0 + 2)
        spans.append([s.get_span_context() for s in (root, route, upstream)])
        assert all(s.is_recording() == (ratio == 1.0) for s in (root, route, upstream))
        for i, span in enumerate((route, upstream, root)):
            span.end(end_time=T0 + 3 + i)
        exported.append(encode_spans(memory.get_finished_spans()))
    assert spans[0] == spans[1] and len({c.span_id for c in spans[0]}) == 3
    assert exported[0] == exported[1]
    assert ours_sampler.asked == 1
