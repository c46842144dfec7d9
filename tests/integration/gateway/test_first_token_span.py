"""The request span's first-token event and TTFT attribute mark the first content chunk, not the
role-only chunk OpenAI-style servers open with (the gateway app in-process, spans in memory, the
fake upstream a real server that waits between its role chunk and the first word)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.key_store import KeyStore
from gateway.settings import Settings
from observability.tracing import FIRST_TOKEN_EVENT
from policies.schema import Policy
from tests.support import procs
from tests.support.app_thread import ListSink, serving

ROLE_DELAY_S = 0.8


@pytest.fixture(scope="module")
def served(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, str, ListSink, InMemorySpanExporter]]:
    root: Path = tmp_path_factory.mktemp("first-token")
    store = KeyStore.in_data_dir(root)
    key = store.create("red")[0]
    model = f"m;role_delay_ms={int(ROLE_DELAY_S * 1000)};chunks=3"
    policy = Policy.model_validate({"backends": {"up": {"kind": "openai", "base_url": f"{fake_upstream}/v1"}},
                                    "models": {"m": {"deployments": [{"backend": "up", "model": model}]}},
                                    "teams": {"red": {}}})
    sink, exporter = ListSink(), InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(Settings(data_dir=root), policy=policy, key_store=store, usage_sink=sink,
                     tracer_provider=tracer_provider)
    try:
        with serving(app) as (url, _):
            yield url, key, sink, exporter
    finally:
        store.close()


Served = tuple[str, str, ListSink, InMemorySpanExporter]


def test_the_first_token_event_is_at_the_first_word(served: Served) -> None:
    url, key, sink, exporter = served
    response = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert response.status_code == 200 and '"role":"assistant"' in response.text
    request_id = response.headers["x-request-id"]
    record = procs.wait_until(lambda: next((r for r in sink.records if r.request_id == request_id), None),
                              "the usage record", 10)
    assert record.ttft_s >= ROLE_DELAY_S and record.upstream_latency_s >= ROLE_DELAY_S
    assert record.itl_gaps_s and len(record.itl_gaps_s) == 2  # 3 words: 2 gaps; the role wait is none of them

    def server_span():  # type: ignore[no-untyped-def]
        spans = [s for s in exporter.get_finished_spans() if s.attributes
                 and s.attributes.get("hybridgw.request_id") == request_id and s.kind.name == "SERVER"]
        return spans[0] if spans else None

    span = procs.wait_until(server_span, "the request span", 10)
    events = [e for e in span.events if e.name == FIRST_TOKEN_EVENT]
    assert len(events) == 1
    assert (events[0].timestamp - span.start_time) / 1e9 >= ROLE_DELAY_S
    assert events[0].attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(record.ttft_s)
    assert span.attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(record.ttft_s)
