"""What tracing costs per gateway request, in parts, in one process: the gateway's span pattern (request
span, `route` child, `upstream` CLIENT child, first-token event, the usage attributes) on the event loop —
the SDK's spans vs observability/trace_recorder.py's, both into a BatchSpanProcessor —, and the OTLP export
thread's encoding of those spans — the SDK's encoder vs observability/trace_otlp.py (checked to be the same
message). Alternating A/B rounds, medians; CPU µs per request.

Run: .venv/bin/python -m bench.trace_cost [--requests 2000] [--rounds 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.otlp_discard import start_discard
from observability.trace_export import CompactOTLPSpanExporter
from observability.trace_otlp import SpanEncoder
from observability.trace_recorder import RecordingTracerProvider
from observability.tracing import (
    SAMPLERS,
    TracingConfig,
    add_first_token_event,
    build_tracing,
    usage_attributes,
)
from observability.usage import UsageRecord

BATCH = 512  # the BatchSpanProcessor's default max_export_batch_size


def one_request(tracer: trace.Tracer, record: UsageRecord) -> None:
    """The gateway's calls for one non-streamed request (gateway/proxy.py, route_plan.py, attempts.py,
    usage_emit.py), attributes as the gateway sets them."""
    span = tracer.start_span("POST /v1/chat/completions", kind=trace.SpanKind.SERVER)
    route = tracer.start_span("route", context=trace.set_span_in_context(span))
    route.set_attributes({"hybridgw.rule": "default", "hybridgw.route.strategy": "first",
                          "hybridgw.route.reason": "rule default: first allowed target",
                          "hybridgw.route.targets": ["fake"], "hybridgw.route.refusal": "",
                          "hybridgw.over_budget": False, "hybridgw.estimated.input_tokens": 12,
                          "hybridgw.estimated.output_tokens": 16})
    route.end()
    span.update_name("chat m")
    upstream = tracer.start_span("upstream fake", context=trace.set_span_in_context(span),
                                 kind=trace.SpanKind.CLIENT)
    add_first_token_event(span, 0.021)
    attrs = usage_attributes(record)
    upstream.set_attributes({k: v for k, v in attrs.items() if k.startswith("gen_ai.")})
    span.set_attributes(attrs)
    upstream.end()
    span.end()


def sample_record() -> UsageRecord:
    return UsageRecord(
        request_id="req-0123456789abcdef", time=time.time(), team="bench", key_id="k-0123", model_alias="m",
        backend="fake", model="fake-model", rule="default", status="ok", http_status=200, stream=False,
        prompt_tokens=12, completion_tokens=16, estimated_prompt_tokens=12, estimated_completion_tokens=16,
        usage_source="upstream", cost_usd=0.0000213, ttft_s=0.0213, itl_p50_s=None, itl_p95_s=None, itl_max_s=None,
        e2e_s=0.0215, upstream_latency_s=0.0211, finish_reason="stop", provider="openai")


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def loop_tracers() -> dict[str, trace.Tracer]:
    """One tracer per span implementation, each provider with the batch processor the gateway uses."""
    tracers = {}
    kinds = (("SDK spans", TracerProvider, 1.0), ("recording spans", RecordingTracerProvider, 1.0),
             ("recording spans, OTEL_TRACES_SAMPLER_ARG=0.1", RecordingTracerProvider, 0.1))
    for name, provider_type, ratio in kinds:
        provider = provider_type(sampler=SAMPLERS["parentbased_traceidratio"](ratio))
        provider.add_span_processor(BatchSpanProcessor(Dropped()))
        tracers[name] = provider.get_tracer("hybridgw.gateway")
    return tracers


def thread_timed(fn: Callable[[], object], count: int) -> float:
    """µs of this thread's CPU per request (the batch processor's thread not counted: the loop's share)."""
    start = time.thread_time()
    fn()
    return (time.thread_time() - start) / count * 1e6


def export_costs(spans: Sequence[ReadableSpan], requests: int, rounds: int) -> dict[str, list[float]]:
    """The export thread's whole export() (encoding + one HTTP POST per batch to a receiver that
    discards, in another thread) per request, by exporter and batch size."""
    sink, url = start_discard()
    try:
        kinds = [("SDK OTLPSpanExporter", OTLPSpanExporter(endpoint=url), BATCH)] + [
            ("CompactOTLPSpanExporter", CompactOTLPSpanExporter(endpoint=url), size) for size in (128, 512, 2048)]
        out: dict[str, list[float]] = {f"{name}, batches of {size}": [] for name, _, size in kinds}
        for _ in range(rounds):
            for name, exporter, size in kinds:
                batches = [spans[i:i + size] for i in range(0, len(spans), size)]
                out[f"{name}, batches of {size}"].append(
                    thread_timed(lambda e=exporter, b=batches: [e.export(x) for x in b], requests))
        return out
    finally:
        sink.shutdown()


def timed(fn: Callable[[], object], count: int) -> float:
    """µs per request of fn (which handles `count` requests)."""
    start = time.process_time()
    fn()
    return (time.process_time() - start) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    tracing = build_tracing(TracingConfig(exporter="memory"))
    tracer = tracing.provider.get_tracer("hybridgw.gateway")
    record = sample_record()
    assert tracing.memory is not None
    for _ in range(200):  # warm-up
        one_request(tracer, record)
    tracing.memory.clear()
    one_pass = timed(lambda: [one_request(tracer, record) for _ in range(args.requests)], args.requests)
    spans: Sequence[ReadableSpan] = tracing.memory.get_finished_spans()
    batches = [spans[i:i + BATCH] for i in range(0, len(spans), BATCH)]
    encoder = SpanEncoder()
    ours = ExportTraceServiceRequest.FromString(encoder.encode(batches[0]))
    assert ours == encode_spans(batches[0]), "the two encoders disagree"
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {len(spans) // args.requests} spans per request, "
          f"{len(encoder.encode(batches[0])) // len(batches[0])} bytes per span (OTLP)")
    tracers = loop_tracers()
    loop_us: dict[str, list[float]] = {name: [] for name in tracers}
    for _ in range(args.rounds):
        for name, t in tracers.items():
            loop_us[name].append(thread_timed(lambda t=t: [one_request(t, record) for _ in range(args.requests)],
                                              args.requests))
    sdk_us, our_us = [], []
    for _ in range(args.rounds):  # alternating, so the machine's noise hits both alike
        sdk_us.append(timed(lambda: [encode_spans(b).SerializePartialToString() for b in batches], args.requests))
        our_us.append(timed(lambda: [encoder.encode(b) for b in batches], args.requests))
    sdk, ours_ = statistics.median(sdk_us), statistics.median(our_us)
    base = statistics.median(loop_us["SDK spans"])
    for name, values in loop_us.items():
        print(f"on the loop, {name} (3 spans + event + attributes, batch processor): "
              f"{statistics.median(values):.0f} µs per request (rounds {' / '.join(f'{v:.0f}' for v in values)}) "
              f"= {statistics.median(values) / base:.2f}× the SDK's")
    print(f"(build_tracing(memory), one pass: {one_pass:.0f} µs per request)")
    print(f"export encoding, SDK encode_spans + SerializePartialToString: {sdk:.0f} µs per request "
          f"(rounds {' / '.join(f'{v:.0f}' for v in sdk_us)})")
    print(f"export encoding, observability/trace_otlp.py: {ours_:.0f} µs per request "
          f"(rounds {' / '.join(f'{v:.0f}' for v in our_us)}) = {ours_ / sdk:.2f}× the SDK's")
    for name, values in export_costs(spans, args.requests, args.rounds).items():
        print(f"export(), {name}: {statistics.median(values):.0f} µs per request "
              f"(rounds {' / '.join(f'{v:.0f}' for v in values)})")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
