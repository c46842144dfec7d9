"""What an operator scrapes and traces from a running gateway: GET /metrics in Prometheus text (the
GenAI histograms with the conventions' buckets, per-team counters) and the OTLP spans of a request
(GenAI attributes, an upstream child whose context reached the upstream as `traceparent`)."""
from __future__ import annotations

import asyncio
import re
import secrets
from collections import defaultdict
from typing import Any

from observability.metrics import DURATION_BOUNDS, TOKEN_BOUNDS, TPOT_BOUNDS, TTFT_BOUNDS
from tests.integration.accounting.conftest import Stack, wait_until
from tests.integration.accounting.traffic import Outcome, Seen, chat

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = dict(_LABEL.findall(match["labels"] or ""))
            out.append((match["name"], labels, float(match["value"])))
    return out


def _sum(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items()))


def _buckets(samples: list[tuple[str, dict[str, str], float]], name: str) -> list[float]:
    bounds = {float(ls["le"]) for n, ls, _ in samples if n == f"{name}_bucket"}
    return sorted(bounds)


def test_metrics_have_genai_histograms_and_exact_per_team_counters(stack: Stack) -> None:
    tpots_before = _sum(_samples(stack.gateways[0].metrics()), "gen_ai_server_time_per_output_token_seconds_count")

    async def traffic() -> Seen:
        seen = Seen()
        async with stack.clients("metrics") as clients:  # gateway A only: metrics are per process
            for i in range(12):
                seen.outcomes.append(await chat(clients[0], i, stream=i % 3 != 0, chunks=2 + i % 4))
        return seen

    seen = asyncio.run(traffic())
    assert seen.statuses() == {200: 12}
    want = seen.totals()
    gateway = stack.gateways[0]

    def counted() -> list[tuple[str, dict[str, str], float]] | None:
        samples = _samples(gateway.metrics())
        done = _sum(samples, "hybridgw_requests_total", hybridgw_team="metrics") == want["requests"]
        return samples if done else None

    samples = wait_until(counted, "gateway A's per-team request counter to reach 12")
    team = {"hybridgw_team": "metrics", "hybridgw_backend": "hosted"}
    assert _sum(samples, "hybridgw_requests_total", hybridgw_route="hosted-first", hybridgw_status="ok",
                **team) == 12
    assert _sum(samples, "hybridgw_tokens_total", gen_ai_token_type="input", **team) == want["prompt_tokens"]
    assert _sum(samples, "hybridgw_tokens_total", gen_ai_token_type="output", **team) == want["completion_tokens"]
    assert _sum(samples, "hybridgw_cost_usd_total", **team) > 0
    # The GenAI histograms, Prometheus-translated, with the semantic conventions' bucket bounds.
    for name, bounds in (("gen_ai_server_time_to_first_token_seconds", TTFT_BOUNDS),
                         ("gen_ai_server_time_per_output_token_seconds", TPOT_BOUNDS),
                         ("gen_ai_server_request_duration_seconds", DURATION_BOUNDS),
                         ("gen_ai_client_token_usage", TOKEN_BOUNDS)):
        assert _buckets(samples, name) == sorted([*map(float, bounds), float("inf")]), name
        genai = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "m", "gen_ai_provider_name": "openai"}
        assert _sum(samples, f"{name}_count", **genai) > 0, name
    streamed = [o for o in seen.ok if o.stream]
    assert _sum(samples, "gen_ai_server_time_to_first_token_seconds_count") >= len(streamed)
    # One TPOT per streamed request whose tokens came apart (semconv: (duration − TTFT) / (tokens − 1)),
    # not one per inter-token gap.
    tpots = _sum(samples, "gen_ai_server_time_per_output_token_seconds_count") - tpots_before
    assert tpots == sum(1 for o in streamed if o.content_chunks >= 2 and o.completion_tokens >= 2) > 0
    assert _sum(samples, "gen_ai_client_token_usage_count", gen_ai_token_type="input") >= 12


def _spans_of(stack: Stack, request_id: str) -> dict[str, dict[str, Any]]:
    def found() -> dict[str, dict[str, Any]] | None:
        spans = stack.traces.snapshot()
        server = [s for s in spans if s["kind"] == 2 and request_id in
                  (s["attributes"].get("hybridgw.request_id"), s["attributes"].get("hybridgw.client_request_id"))]
        if not server:
            return None
        children = [s for s in spans if s["parent_span_id"] == server[0]["span_id"]]
        return {"server": server[0], **{str(s["name"]): s for s in children}} if children else None

    return dict(wait_until(found, f"the spans of {request_id} at the OTLP receiver"))


def test_request_span_has_genai_attributes_and_an_upstream_child(stack: Stack) -> None:
    request_id = "req-traced-" + secrets.token_hex(6)

    async def one() -> tuple[Outcome, dict[str, Any]]:
        async with stack.clients("traced") as clients:
            outcome = await chat(clients[0], 4, stream=True, chunks=5, extra_headers={"x-request-id": request_id},
                                 user="fake:chunks=5;reply_model=m-2024-07-18")  # a dated snapshot answers
        return outcome, stack.fake_last_request()

    outcome, upstream_request = asyncio.run(one())
    assert outcome.status == 200 and outcome.request_id == request_id
    spans = _spans_of(stack, request_id)
    server, upstream = spans["server"], spans["upstream hosted"]
    attrs = server["attributes"]
    assert server["name"] == "chat m"  # GenAI span naming: "{operation} {model}"
    assert isinstance(attrs, dict)
    assert {k: attrs[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                                  "gen_ai.response.model", "hybridgw.team", "hybridgw.rule", "hybridgw.backend",
                                  "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
                                  "gen_ai.response.finish_reasons")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "m",
        "gen_ai.response.model": "m-2024-07-18", "hybridgw.team": "traced", "hybridgw.rule": "hosted-first",
        "hybridgw.backend": "hosted", "gen_ai.usage.input_tokens": outcome.prompt_tokens,
        "gen_ai.usage.output_tokens": outcome.completion_tokens, "gen_ai.response.finish_reasons": ["stop"]}
    assert float(attrs["gen_ai.response.time_to_first_chunk"]) > 0
    assert int(attrs["hybridgw.estimated.input_tokens"]) > 0 and float(attrs["hybridgw.cost_usd"]) > 0
    assert "gen_ai.first_token" in server["events"]
    assert upstream["trace_id"] == server["trace_id"] and upstream["kind"] == 3  # CLIENT
    route = spans["route"]["attributes"]  # the decision, a child span of its own
    assert (route["hybridgw.rule"], route["hybridgw.route.targets"]) == ("hosted-first", ["hosted"])
    assert route["hybridgw.estimated.input_tokens"] == attrs["hybridgw.estimated.input_tokens"]
    # The upstream call carried the upstream span's context, so an engine's spans join this trace.
    # Upstreams get the gateway's own id; the client's stays on the span beside it.
    assert attrs["hybridgw.client_request_id"] == request_id and attrs["hybridgw.request_id"].startswith("req_")
    assert upstream_request["headers"]["x-request-id"] == attrs["hybridgw.request_id"]
    version, trace_id, parent_id, _flags = upstream_request["headers"]["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", server["trace_id"], upstream["span_id"])


def test_a_clients_traceparent_makes_the_request_span_its_child(stack: Stack) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    request_id = "req-parented-" + secrets.token_hex(6)

    async def one() -> Outcome:
        async with stack.clients("traced") as clients:
            return await chat(clients[0], 2, stream=False, extra_headers={
                "x-request-id": request_id, "traceparent": f"00-{trace_id}-{parent_id}-01"})

    assert asyncio.run(one()).status == 200
    server = _spans_of(stack, request_id)["server"]
    assert (server["trace_id"], server["parent_span_id"]) == (trace_id, parent_id)


def test_spans_of_many_requests_each_have_their_own_trace(stack: Stack) -> None:
    async def traffic() -> list[Outcome]:
        async with stack.clients("traced") as clients:
            return list(await asyncio.gather(*(chat(clients[0], i, stream=i % 2 == 0, extra_headers={
                "x-request-id": f"req-many-{i}-{secrets.token_hex(4)}"}) for i in range(8))))

    outcomes = asyncio.run(traffic())
    assert [o.status for o in outcomes] == [200] * 8
    traces: dict[str, int] = defaultdict(int)
    for outcome in outcomes:
        assert outcome.request_id is not None
        spans = _spans_of(stack, outcome.request_id)
        traces[str(spans["server"]["trace_id"])] += 1
        assert spans["server"]["attributes"]["gen_ai.usage.output_tokens"] == outcome.completion_tokens
    assert len(traces) == 8
