"""In-process CPU of the per-request work that issue #15 round 4 batched or dropped, for comparing two
source trees run one after the other (PYTHONPATH picks the tree): the metrics of one finished record
(non-streamed, and a 16-chunk stream), the access line's cost on the event loop, the ledger's store write
of one record (SQLite, batches of 64), and three spans per request (request, route, upstream) at head
sampling ratio 0 and 1. Thread CPU time, µs per request.

Run, once per tree, alternating (a path, not -m: the tree, not this checkout, must be first on sys.path):
    (cd TREE && PYTHONPATH=TREE python /path/to/this/bench/hot_path_parts.py NAME)
"""
from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

from observability.ledger import LedgerConfig, open_ledger
from observability.metrics import RequestMetrics, build_metrics
from observability.trace_recorder import RecordingTracerProvider
from observability.usage import UsageRecord


def usage(i: int, gaps: int = 0) -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{i}", time=1_795_000_000.0, team="alpha", key_id="key-a", model_alias="m", backend="fake",
        model="m", rule="default", status="ok", http_status=200, stream=bool(gaps), prompt_tokens=100,
        completion_tokens=gaps + 1 if gaps else 20, estimated_prompt_tokens=98, estimated_completion_tokens=32,
        usage_source="upstream", cost_usd=0.000027, ttft_s=0.05, itl_p50_s=None, itl_p95_s=None, itl_max_s=None,
        e2e_s=0.3, itl_gaps_s=(0.02,) * gaps, provider="openai")


def per_call(fn: Callable[[], object], n: int) -> float:
    start = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - start) / n * 1e6


def access_line_cost() -> float:
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    logger = logging.getLogger("hybridgw.access")
    logger.propagate, record = False, usage(0)
    logger.setLevel("INFO")
    try:  # round 4: the loop hands the record over; the line is made on the log thread
        from gateway.access_log import log_access
        from gateway.log_thread import LazyQueueHandler
        logger.handlers[:] = [LazyQueueHandler(records)]  # type: ignore[arg-type]
        return per_call(lambda: log_access(logger, record, "", ()), 20000)
    except ImportError:  # before: the line formatted on the loop, a LogRecord through a QueueHandler
        import orjson
        logger.handlers[:] = [logging.handlers.QueueHandler(records)]  # type: ignore[arg-type]

        def line() -> None:
            data = record.to_dict()
            del data["itl_gaps_s"]
            logger.info(orjson.dumps(data).decode())
        return per_call(line, 20000)


class Discard(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def spans_cost(ratio: float) -> float:
    provider = RecordingTracerProvider(sampler=ParentBasedTraceIdRatio(ratio))
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    tracer = provider.get_tracer("bench")

    def one_request() -> None:
        root = tracer.start_span("POST /v1/chat/completions", kind=trace.SpanKind.SERVER)
        tracer.start_span("route", context=trace.set_span_in_context(root)).end()
        upstream = tracer.start_span("upstream fake", context=trace.set_span_in_context(root), kind=trace.SpanKind.CLIENT)
        upstream.end()
        root.end()
    cost = per_call(one_request, 5000)
    provider.shutdown()
    return cost


def main() -> int:
    metrics = RequestMetrics(build_metrics().provider)
    plain, stream = usage(0), usage(0, gaps=15)
    out = {"metrics, non-streamed": per_call(lambda: metrics.record(plain), 3000),
           "metrics, 16-chunk stream": per_call(lambda: metrics.record(stream), 2000),
           "access line on the loop": access_line_cost()}
    with tempfile.TemporaryDirectory() as tmp:
        ledger = open_ledger("", Path(tmp), LedgerConfig())
        records = [usage(i) for i in range(3000)]
        start = time.thread_time()
        for i in range(0, len(records), 64):
            ledger._write(records[i:i + 64])  # the writer thread's store step, without its thread
        out["ledger store write"] = (time.thread_time() - start) / len(records) * 1e6
        ledger.store.close()
    for ratio in (0.0, 1.0):
        out[f"3 spans, ratio {ratio:g}"] = spans_cost(ratio)
    print(f"{sys.argv[1] if len(sys.argv) > 1 else 'this'}: " + " | ".join(f"{k} {v:.1f}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
