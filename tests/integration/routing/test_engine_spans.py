"""One trace across both processes: the gateway's upstream span is the parent of the engine's span,
whose queue, prefill and decode children the engine records when the request ends (W3C traceparent
carried on the upstream call; both processes export to one real OTLP/HTTP receiver)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.routing.conftest import serving, wait_until
from tests.support.otlp_sink import TraceSink

POLICY = """
version: 1
backends:
  local: {kind: engine, model: tiny-random}
models:
  private:
    deployments: [{backend: local, model: tiny-random}]
teams: {red: {}}
"""


def _named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def test_engine_spans_join_the_gateway_trace(tmp_path: Path) -> None:
    sink = TraceSink().start()
    env = {"HYBRIDGW_TRACES": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    try:
        with serving(tmp_path, POLICY, env) as gateway:
            routed = gateway.chat("private", max_tokens=5, temperature=0)
            assert routed.status == 200 and routed.backend == "local"
            spans = wait_until(lambda: (lambda s: s if _named(s, "engine.decode") and _named(s, "upstream local")
                                        else None)(sink.snapshot()), "the engine's and the gateway's spans")
    finally:
        sink.stop()
    upstream = _named(spans, "upstream local")[0]
    engine = next(s for s in spans if s["name"].startswith("engine ") and s["name"] != "engine.queue")
    assert engine["trace_id"] == upstream["trace_id"]
    assert engine["parent_span_id"] == upstream["span_id"]
    assert engine["attributes"]["gen_ai.usage.output_tokens"] == routed.body.usage.completion_tokens
    assert engine["attributes"]["gen_ai.usage.input_tokens"] == routed.body.usage.prompt_tokens
    phases = {s["name"] for s in spans if s["parent_span_id"] == engine["span_id"]}
    assert phases == {"engine.queue", "engine.prefill", "engine.decode"}
