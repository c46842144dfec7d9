"""The end of every request: timing stats → one UsageRecord into the sink (metrics are recorded
from it on the ledger's thread), one JSON log line (made on the log thread), spans ended, limits
settled off the request path."""
from __future__ import annotations

from opentelemetry.trace import StatusCode

from gateway.access_log import log_access
from gateway.catalog import ResolvedBackend
from gateway.exchange import Exchange, UsageOutcome
from gateway.services import Services
from gateway.timing import TimingStats, summarize
from observability.tracing import add_first_token_event, usage_attributes
from observability.usage import UsageRecord
from policies.backend_kinds import BACKEND_KINDS

NO_OUTCOME = UsageOutcome(None, 0, "counted")  # no answer came (refused, failed before one): nothing used
OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
# The gen_ai.* attributes usage_attributes (and _end_spans) may write: the upstream span's. Picked by name, not
# by a prefix test of every attribute (str.startswith parses its arguments per call on 3.11: ~1 k
# instructions, ×26 a request); tests/unit/gateway/test_usage_emit.py holds it to the prefix test.
GEN_AI_KEYS = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
               "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.response.time_to_first_chunk",
               "gen_ai.response.finish_reasons")


def provider_of(backend: ResolvedBackend | None) -> str:
    """gen_ai.provider.name of a backend."""
    if backend is None:
        return ""
    return BACKEND_KINDS[backend.kind].provider_name(backend.model_prefix)


def build_record(ex: Exchange, stats: TimingStats, provider: str = "", cost_usd: float = 0.0) -> UsageRecord:
    target, ending, outcome = ex.target, ex.ending, ex.outcome or NO_OUTCOME
    # A refused request reached no upstream: it used no tokens (its estimate stays in estimated_*).
    prompt = outcome.prompt_tokens if outcome.prompt_tokens is not None else ex.estimated_prompt_tokens
    if ending.status == "rejected":
        prompt = 0
    return UsageRecord(
        request_id=ex.request_id, client_request_id=ex.client_request_id, time=ex.clock.arrival_wall,
        team=ex.team, key_id=ex.key_id,
        model_alias=ex.alias, backend=target.backend if target else "", model=target.model if target else "",
        rule=ex.route.decision.rule if ex.route else "", status=ending.status, http_status=ending.http_status,
        stream=ex.stream,
        prompt_tokens=prompt, completion_tokens=outcome.completion_tokens,
        estimated_prompt_tokens=ex.estimated_prompt_tokens,
        estimated_completion_tokens=ex.estimated_completion_tokens,
        usage_source=outcome.usage_source, cost_usd=cost_usd,
        ttft_s=stats.ttft_s, itl_p50_s=stats.itl_p50_s, itl_p95_s=stats.itl_p95_s, itl_max_s=stats.itl_max_s,
        e2e_s=stats.e2e_s, upstream_latency_s=stats.upstream_latency_s, error_type=ending.error_type,
        finish_reason=outcome.finish_reason, tags=dict(ex.tags), provider=provider,
        kv_bytes=ex.route.facts.kv_bytes.get(target.backend, 0) if ex.route is not None and target is not None else 0,
        operation=OPERATIONS.get(ex.endpoint, ex.endpoint), itl_gaps_s=stats.gaps_s,
        engine_view=dict(ex.route.view) if ex.route is not None else {},
        structured_output=ex.route.facts.structured_output if ex.route is not None else "",
    )


def finish(svc: Services, ex: Exchange) -> UsageRecord:
    """Close the exchange exactly once; never raises into the request path."""
    ex.clock.mark_end()
    stats = summarize(ex.clock)
    backend = svc.catalog.backends.get(ex.target.backend) if ex.target else None
    record = build_record(ex, stats, provider_of(backend), _learn_and_price(svc, ex))
    try:
        svc.usage_sink.submit(record)
    except Exception as exc:  # the sink must not break a response that is already out
        svc.log.warning("usage sink refused record %s: %r", record.request_id, exc)
    if svc.settings.access_log and svc.access_log.isEnabledFor(20):  # the line is made off the loop
        log_access(svc.access_log, record, ex.ending.error_message, ex.attempts)
    _end_spans(ex, record)
    if svc.limiter is not None and ex.reservation is not None:
        svc.spawn(svc.limiter.settle(ex.reservation, record.total_tokens, record.cost_usd))
    return record


def _learn_and_price(svc: Services, ex: Exchange) -> float:
    """Give back the KV hold, teach the router (calibration, output lengths) and price the request."""
    svc.live.release(ex.hold)
    ex.hold = None
    if ex.target is None or ex.route is None or ex.ending.status == "rejected":
        return 0.0
    outcome = ex.outcome or NO_OUTCOME
    prompt = outcome.prompt_tokens if outcome.prompt_tokens is not None else ex.estimated_prompt_tokens
    if ex.ending.status == "ok":
        upstream_prompt = outcome.prompt_tokens if outcome.usage_source == "upstream" else None
        svc.live.record_usage(ex.route.facts, ex.target, upstream_prompt, outcome.completion_tokens)
    return svc.pricing.cost_usd(ex.target, prompt, outcome.completion_tokens)


def _end_spans(ex: Exchange, record: UsageRecord) -> None:
    if ex.span is not None and ex.clock.first_chunk is not None and record.ttft_s is not None:
        add_first_token_event(ex.span, record.ttft_s, _wall_ns(ex, ex.clock.first_chunk))
    recording = [s for s in (ex.upstream_span, ex.span) if s is not None and s.is_recording()]
    if recording:
        # Every attribute costs the SDK a validation: the request's span gets the whole description,
        # the upstream (CLIENT) span only the GenAI ones (semconv's), not the hybridgw.* copies (~1/4 of
        # the gateway's CPU per request with tracing on went to attributes).
        attrs = usage_attributes(record)
        if ex.outcome is not None and ex.outcome.response_model:  # what answered (a dated snapshot, say)
            attrs["gen_ai.response.model"] = ex.outcome.response_model
        for span in recording:
            span.set_attributes(attrs if span is ex.span else {k: attrs[k] for k in GEN_AI_KEYS if k in attrs})
            if record.status != "ok":
                span.set_status(StatusCode.ERROR, record.error_type or record.status)
    for span in (ex.upstream_span, ex.span):
        if span is not None:
            span.end()
    ex.upstream_span = ex.span = None


def _wall_ns(ex: Exchange, perf_time: float) -> int:
    """A perf_counter reading of this request as unix-epoch nanoseconds (span event timestamps)."""
    return int((ex.clock.arrival_wall + perf_time - ex.clock.arrival) * 1e9)
