"""The background threads' work per request, in one process and no server, counted by callgrind (deterministic
where timings on this shared box are not): the span exporter's encoding, the ledger writer's parts (metrics
observer, poison check, SQLite batch write) and the access line, plus the loop's span work (three spans started,
described and ended) — each part inside a stage slot of its own (bench/instr_stages.py's trampolines).

Run: .venv/bin/python -m bench.thread_work_instr [--tree NAME=PATH ...] [--requests 600] [--batch 256]
--batch: the ledger's batch size (256 under load; ~3 when requests come one at a time under callgrind).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = {"request_id": "req_20c48b7fc9b79d63fe9ce853", "time": 1796227620.7709432, "team": "bench",
          "key_id": "59753607", "model_alias": "m", "backend": "up", "model": "m", "rule": "default", "status": "ok",
          "http_status": 200, "stream": False, "prompt_tokens": 3, "completion_tokens": 4,
          "estimated_prompt_tokens": 10, "estimated_completion_tokens": 16, "usage_source": "upstream",
          "cost_usd": 1.1e-05, "ttft_s": 0.05873820499982685, "itl_p50_s": None, "itl_p95_s": None, "itl_max_s": None, "e2e_s": 0.062208118999478756,
          "upstream_latency_s": 0.019093300001259195, "finish_reason": "stop", "provider": "openai",
          "operation": "chat"}
PARTS = ("loop: 3 spans (start, attributes, end)", "export: encode (batches of 512 spans)",
         "export: encode + POST (the exporter, to a local receiver)",
         "ledger: metrics observer", "ledger: poison check", "ledger: store write", "log: access line")


def records(n: int) -> list:
    """n records as the bench's non-streamed requests leave them (ids, times and timings vary)."""
    from observability.usage import UsageRecord

    fields = {f.name for f in dataclasses.fields(UsageRecord)}
    base = UsageRecord(**{k: v for k, v in RECORD.items() if k in fields})
    return [dataclasses.replace(base, request_id=f"req_{i:024x}", time=base.time + i * 0.001,
                                e2e_s=base.e2e_s + i * 1e-6, ttft_s=base.ttft_s + i * 1e-6,
                                upstream_latency_s=base.upstream_latency_s + i * 1e-6) for i in range(n)]


def loop_spans(tracer, recs: list) -> None:  # type: ignore[no-untyped-def]
    """What the loop does with spans per request: the request, route and upstream spans as the gateway
    makes them (gateway/proxy.py, route_plan.py, attempts.py, usage_emit.py)."""
    from opentelemetry import trace

    from observability.tracing import add_first_token_event, inject_traceparent, usage_attributes

    for record in recs:
        span = tracer.start_span("POST /v1/chat/completions", kind=trace.SpanKind.SERVER)
        route = tracer.start_span("route", context=trace.set_span_in_context(span))
        route.set_attributes({"hybridgw.rule": "default", "hybridgw.route.strategy": "static",
                              "hybridgw.route.reason": "default rule", "hybridgw.route.targets": ["up"],
                              "hybridgw.route.refusal": "", "hybridgw.over_budget": False,
                              "hybridgw.estimated.input_tokens": 10, "hybridgw.estimated.output_tokens": 16})
        route.end()
        upstream = tracer.start_span("upstream up", context=trace.set_span_in_context(span), kind=trace.SpanKind.CLIENT)
        inject_traceparent({}, upstream)
        add_first_token_event(span, record.ttft_s, 1796227620770943200)
        attrs = usage_attributes(record)
        upstream.set_attributes({k: v for k, v in attrs.items() if k.startswith("gen_ai.")})
        span.set_attributes(attrs)
        upstream.end()
        span.end()


def child(requests: int, batch: int) -> None:
    """Inside callgrind: each part once for `requests` requests, in its own slot; prints the slot map."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from bench import instr_stages
    from bench.otlp_discard import start_discard
    from gateway.access_log import access_line
    from gateway.log_thread import atomic_pieces
    from observability.metrics import RequestMetrics, build_metrics
    from observability.sqlite_store import SqliteStore
    from observability.stores import record_problem
    from observability.trace_export import CompactOTLPSpanExporter
    from observability.trace_otlp import SpanEncoder
    from observability.trace_recorder import RecordingTracerProvider

    slots = instr_stages.build_slots(Path(tempfile.gettempdir()) / "hg-instr-slots")
    recs = records(requests + 50)
    warm, recs = recs[:50], recs[50:]
    provider = RecordingTracerProvider(resource=Resource.create({"service.name": "hybridgw"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("gateway")
    metrics = RequestMetrics(build_metrics().provider)
    store = SqliteStore(Path(tempfile.mkdtemp(prefix="hg-thread-work-")) / "usage.sqlite3")
    encoder = SpanEncoder()
    sink, url = start_discard()
    exporter = CompactOTLPSpanExporter(endpoint=url)

    def export_all(spans: list) -> None:  # type: ignore[type-arg]
        for i in range(0, len(spans), 512):
            exporter.export(spans[i:i + 512])

    def encode_all(spans: list) -> None:  # type: ignore[type-arg]
        for i in range(0, len(spans), 512):
            encoder.encode(spans[i:i + 512])

    def write_all(rs: list) -> None:  # type: ignore[type-arg]
        for i in range(0, len(rs), batch):
            store.write_batch(rs[i:i + batch])

    def lines(rs: list) -> None:  # type: ignore[type-arg]
        atomic_pieces([access_line(r, "", ()) for r in rs])

    loop_spans(tracer, warm)  # warm-up: caches, first calls
    encode_all(memory.get_finished_spans())
    export_all(memory.get_finished_spans())
    memory.clear()
    for fn in (lambda rs: [metrics.record(r) for r in rs], lambda rs: [record_problem(r) for r in rs], write_all, lines):
        fn(warm)
    slots.s0(loop_spans, tracer, recs)
    spans = list(memory.get_finished_spans())
    slots.s1(encode_all, spans)
    slots.s2(export_all, spans)
    slots.s3(lambda: [metrics.record(r) for r in recs])
    slots.s4(lambda: [record_problem(r) for r in recs])
    slots.s5(write_all, recs)
    slots.s6(lines, recs)
    sink.shutdown()
    print(json.dumps({"spans": len(spans)}))


def measure(name: str, tree: Path, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    from bench.hot_path_instr import inclusive

    out = workdir / f"cg-{name}"
    env = {"PYTHONPATH": f"{tree}:{ROOT}", "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"}
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                          "child", str(args.requests), str(args.batch)], env=env, cwd=tree, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"{name}: {run.stderr[-2000:]}")
    _, slots = inclusive(out)
    return {part: slots.get(f"hg_slot_{n}", (0, 0))[0] / args.requests for n, part in enumerate(PARTS)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH (default: this checkout)")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    trees = [(n, Path(p).resolve()) for n, p in (t.split("=", 1) for t in args.tree)] or [("this", ROOT)]
    workdir = Path(tempfile.mkdtemp(prefix="thread-work-"))
    results = {name: measure(name, tree, args, workdir) for name, tree in trees}
    names = list(results)
    print(f"instructions per request ({args.requests} requests, ledger batch {args.batch}; callgrind files in {workdir})")
    print("| part | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for part in (*PARTS, "total (encode counted once)"):
        row = [sum(v for k, v in r.items() if k != PARTS[1]) if part.startswith("total") else r[part] for r in results.values()]
        print(f"| {part} | " + " | ".join(f"{v / 1e3:.1f} k" for v in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
