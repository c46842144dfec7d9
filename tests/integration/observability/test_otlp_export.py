"""HYBRIDGW_TRACES=otlp posts through the SDK's OTLP/HTTP transport with our encoder: a real HTTP
receiver on 127.0.0.1 gets protobuf that parses to the same message the SDK's encoder writes, with the
request's parent/child structure and attributes, and the env's OTLP headers on the request."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from observability.tracing import build_tracing, tracing_config_from_env


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Receiver.received
    server.shutdown()


def test_otlp_export_reaches_a_collector_as_the_sdk_would_encode_it(receiver: tuple[str, list],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url, received = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{url}/v1/traces")  # the SDK reads os.environ
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=red")
    tracing = build_tracing(tracing_config_from_env({"HYBRIDGW_TRACES": "otlp"}))
    assert isinstance(tracing.provider, TracerProvider)
    copy = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(copy))
    tracer = tracing.provider.get_tracer("hybridgw.gateway")
    for i in range(3):
        span = tracer.start_span("chat m", kind=SpanKind.SERVER, attributes={"hybridgw.request_id": f"r{i}"})
        child = tracer.start_span("upstream up", context=trace.set_span_in_context(span), kind=SpanKind.CLIENT)
        child.set_attributes({"gen_ai.usage.input_tokens": 12, "gen_ai.response.finish_reasons": ("stop",)})
        child.end()
        span.end()
    tracing.shutdown()  # flushes the batch processor: one POST
    assert len(received) == 1
    path, headers, body = received[0]
    assert path == "/v1/traces" and headers["content-type"] == "application/x-protobuf"
    assert headers["x-tenant"] == "red"
    sent = ExportTraceServiceRequest.FromString(body)
    assert sent == encode_spans(copy.get_finished_spans())
    spans = sent.resource_spans[0].scope_spans[0].spans
    by_id = {s.span_id: s for s in spans}
    children = [s for s in spans if s.name == "upstream up"]
    assert len(spans) == 6 and len(children) == 3
    assert all(by_id[c.parent_span_id].name == "chat m" and c.trace_id == by_id[c.parent_span_id].trace_id
               for c in children)
