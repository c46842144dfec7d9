"""observability/trace_otlp.py writes the same OTLP message as the SDK's encoder (parsed back and
compared), for every attribute type, events, links, a remote parent, trace state, an error status and
two scopes — also on a second batch, when its caches answer."""
from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanKind, StatusCode

from observability.trace_otlp import SpanEncoder
from observability.tracing import TracingConfig, build_tracing, extract_context

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def finished_spans(n: int) -> list[ReadableSpan]:
    tracing = build_tracing(TracingConfig(exporter="memory"))
    gateway, other = tracing.provider.get_tracer("gateway"), tracing.provider.get_tracer("engine", "1.2")
    remote = extract_context({"traceparent": TRACEPARENT, "tracestate": "vendor=a1,other=b2"})
    for i in range(n):
        root = gateway.start_span("chat m", context=remote, kind=SpanKind.SERVER,
                                  attributes={"s": f"r{i}", "empty": "", "t": True, "f": False, "one": 1,
                                              "neg": -5, "big": 2**62, "zero": 0, "x": 0.25, "z": 0.0,
                                              "strs": ["a", "b"], "ints": [1, -2], "bools": [True],
                                              "floats": [1.5], "team": "red"})
        root.add_event("gen_ai.first_token", {"gen_ai.response.time_to_first_chunk": 0.042}, timestamp=10**18)
        child = other.start_span("upstream é", context=trace.set_span_in_context(root), kind=SpanKind.CLIENT,
                                 links=[Link(root.get_span_context(), {"why": "retry"})])
        child.set_status(StatusCode.ERROR, "upstream_timeout")
        child.end()
        tracing.provider.get_tracer("gateway").start_span("internal").end()
        root.end()
    assert tracing.memory is not None
    return list(tracing.memory.get_finished_spans())


def test_same_message_as_the_sdk_encoder() -> None:
    spans = finished_spans(3)
    encoder = SpanEncoder()
    for batch in (spans, spans[:5], spans):  # later batches hit the key-value and resource caches
        ours = ExportTraceServiceRequest.FromString(encoder.encode(batch))
        assert ours == encode_spans(batch)
    scopes = ours.resource_spans[0].scope_spans
    assert sorted((s.scope.name, s.scope.version, len(s.spans)) for s in scopes) == [("engine", "1.2", 3),
                                                                                      ("gateway", "", 6)]


def test_true_and_one_stay_apart_in_the_cache() -> None:
    tracing = build_tracing(TracingConfig(exporter="memory"))
    tracer = tracing.provider.get_tracer("t")
    for value in (True, 1, 1.0, "1", [True], [1], ["1"], ["1"]):  # (True,) == (1,): not cached as one
        tracer.start_span("s", attributes={"k": value}).end()
    assert tracing.memory is not None
    batch = list(tracing.memory.get_finished_spans())
    encoder = SpanEncoder()
    decoded = ExportTraceServiceRequest.FromString(encoder.encode(batch))
    values = [s.attributes[0].value for s in decoded.resource_spans[0].scope_spans[0].spans]
    assert [v.WhichOneof("value") for v in values] == ["bool_value", "int_value", "double_value", "string_value",
                                                       "array_value", "array_value", "array_value", "array_value"]
    assert [v.array_value.values[0].WhichOneof("value") for v in values[4:]] == ["bool_value", "int_value",
                                                                                 "string_value", "string_value"]
    assert decoded == encode_spans(batch)


def test_an_attribute_beyond_int64_is_left_out_as_the_sdk_leaves_it_out() -> None:
    tracing = build_tracing(TracingConfig(exporter="memory"))
    tracer = tracing.provider.get_tracer("t")
    tracer.start_span("s", attributes={"before": 1, "huge": 2**64, "after": "x", "huge_list": [1, -(2**70)]}).end()
    assert tracing.memory is not None
    batch = list(tracing.memory.get_finished_spans())
    for encoder in (SpanEncoder(), SpanEncoder()):
        decoded = ExportTraceServiceRequest.FromString(encoder.encode(batch))
        assert decoded == encode_spans(batch)
    keys = [a.key for a in decoded.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert keys == ["before", "after"]
