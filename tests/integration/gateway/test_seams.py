"""The create_app seams other parts plug into — limiter, usage sink, OTel providers, route_fn —
with the real app under uvicorn (in a thread, so the test can read what the sink and the span
exporter received) against the fake upstream."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.key_store import KeyStore
from gateway.settings import Settings
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_inprocess import InProcessLimiter
from policies.decision import RequestFacts, RouteDecision, Target
from policies.schema import Policy
from tests.support.app_thread import ListSink, serving


@dataclass
class Served:
    url: str
    keys: dict[str, str]
    sink: ListSink
    spans: InMemorySpanExporter
    facts: list[RequestFacts]


def _route(facts_seen: list[RequestFacts]):  # type: ignore[no-untyped-def]
    def route(facts: RequestFacts) -> RouteDecision:
        facts_seen.append(facts)
        return RouteDecision((Target("up", "m"),), rule="custom-rule", reason="test route_fn")

    return route


@pytest.fixture(scope="module")
def served(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("seams")
    store = KeyStore.in_data_dir(root)
    keys = {team: store.create(team)[0] for team in ("capped", "free")}
    policy = Policy.model_validate({"backends": {"up": {"kind": "openai", "base_url": f"{fake_upstream}/v1"}},
                                    "models": {"m": {"deployments": [{"backend": "up", "model": "m"}]}},
                                    "teams": {"capped": {}, "free": {}}})
    sink, exporter, facts = ListSink(), InMemorySpanExporter(), []
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    limiter = InProcessLimiter(LimitsConfig(teams={"capped": TeamLimits(requests_per_minute=2)}))
    app = create_app(Settings(data_dir=root), policy=policy, key_store=store, usage_sink=sink, limiter=limiter,
                     tracer_provider=tracer_provider, route_fn=_route(facts))
    try:
        with serving(app) as (url, _):
            yield Served(url, keys, sink, exporter, facts)
    finally:
        store.close()


def chat(served: Served, team: str, stream: bool = False) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {served.keys[team]}", "x-tenant-tag": "t1"},
                      json={"model": "m", "messages": [{"role": "user", "content": "a b"}], "stream": stream,
                            "max_tokens": 9})


def test_limiter_refuses_with_429_and_retry_after(served: Served) -> None:
    assert chat(served, "capped").status_code == 200
    assert chat(served, "capped", stream=True).status_code == 200
    refused = chat(served, "capped")
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    record = next(r for r in served.sink.records if r.request_id == refused.headers["x-request-id"])
    assert record.status == "rejected" and record.http_status == 429 and record.team == "capped"
    assert chat(served, "free").status_code == 200  # other teams are not affected


def test_route_fn_decides_and_sees_the_facts(served: Served) -> None:
    response = chat(served, "free")
    assert response.headers["x-hybridgw-route-rule"] == "custom-rule"
    facts = served.facts[-1]
    assert (facts.team, facts.model_alias, facts.expected_output_tokens) == ("free", "m", 9)
    assert facts.prompt_tokens > 0 and facts.headers.get("x-tenant-tag") == "t1"


def test_one_record_per_request_into_the_sink(served: Served) -> None:
    response = chat(served, "free", stream=True)
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while not any(r.request_id == request_id for r in served.sink.records):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    matching = [r for r in served.sink.records if r.request_id == request_id]
    assert len(matching) == 1
    record = matching[0]
    assert record.stream and record.status == "ok" and record.rule == "custom-rule" and record.backend == "up"
    assert record.completion_tokens == 4 and record.usage_source == "upstream"
    assert len(record.itl_gaps_s) == 3  # 4 tokens → 3 inter-token gaps (the bare finish chunk is no token)
    assert record.provider == "openai" and record.operation == "chat"


def _both_spans(served: Served) -> dict[str, Any]:
    """The request's span and its upstream child by name, once both have ended (a bound on waiting on a
    loaded host, not a speed; a span another test left ending late cannot stand in for either)."""
    deadline = time.monotonic() + 30
    while True:
        spans = {s.name: s for s in served.spans.get_finished_spans()}
        if {"chat m", "upstream up"} <= spans.keys():
            return spans
        assert time.monotonic() < deadline, sorted(spans)
        time.sleep(0.02)


def test_one_server_span_with_an_upstream_child(served: Served) -> None:
    served.spans.clear()
    chat(served, "free")
    spans = _both_spans(served)
    server, upstream = spans["chat m"], spans["upstream up"]  # GenAI naming: "{operation} {model}"
    assert upstream.parent is not None and upstream.parent.span_id == server.context.span_id
    assert server.attributes is not None and server.attributes["hybridgw.rule"] == "custom-rule"


def test_the_upstream_span_carries_the_genai_attributes_only(served: Served) -> None:
    """The request span describes the request in full; its upstream child only in GenAI terms (each
    attribute costs the SDK a validation, and the hybridgw.* ones are the request's, not the call's)."""
    served.spans.clear()
    assert chat(served, "free").status_code == 200
    spans = _both_spans(served)
    server, upstream = dict(spans["chat m"].attributes or {}), dict(spans["upstream up"].attributes or {})
    assert server["hybridgw.team"] == "free" and server["gen_ai.usage.output_tokens"] > 0
    assert upstream["gen_ai.usage.output_tokens"] == server["gen_ai.usage.output_tokens"]
    assert upstream["gen_ai.response.model"] == server["gen_ai.response.model"]
    assert not [k for k in upstream if k.startswith("hybridgw.")]
