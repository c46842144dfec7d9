"""Plan a request's route: its prompt counted (and scored), its facts and the Decider's decision as one
frozen RoutePlan, a `route` span describing it; a refusal becomes the client's error (403, 400 or 503)."""
from __future__ import annotations

import time
from dataclasses import replace

from opentelemetry import trace

from gateway.errors import InvalidRequest, NoBackendAvailable, PermissionDenied, routing_refusal
from gateway.exchange import ParsedRequest, RoutePlan
from gateway.services import Services
from gateway.token_count import measure_prompt
from policies.compiled import CompiledPolicy
from policies.decision import RequestFacts, RouteDecision
from policies.errors import RoutingError
from policies.facts import PromptScores
from policies.route_view import engine_views
from policies.structured_output import EMBEDDINGS_UNSUPPORTED


async def plan_route(svc: Services, request: ParsedRequest, team: str, parent: trace.Span | None, *,
                     compiled: CompiledPolicy, over_budget: bool = False, prompt_tokens: int | None = None,
                     scores: PromptScores | None = None, arrival: float | None = None) -> RoutePlan:
    """The request's facts and the Decider's decision, under a `route` span (a child of `parent`). The
    prompt is counted (and scored) here unless `prompt_tokens` (and `scores`) are given. A policy
    refusal is a plan without targets (refuse_unroutable raises it); bad input raises InvalidRequest."""
    span = route_span(svc.telemetry.tracer, parent)
    body = request.routed
    try:
        if prompt_tokens is None:
            prompt_tokens, scores = await measure_prompt(svc.decider, compiled, body, team,
                                                         off_loop=request.off_loop)
        live = svc.live.live_state()  # one view of the engines for the facts and the decision
        facts = svc.decider.build_facts(body, team, headers=request.headers, over_budget=over_budget,
                                        compiled=compiled, prompt_tokens=prompt_tokens, live=live, scores=scores)
    except RoutingError as exc:
        span.end()
        raise routing_refusal(exc, request.alias) from None
    if request.embeddings:  # our engine serves none: the decision passes it over (structured_output.py)
        facts = replace(facts, embeddings=True)
    decision = (svc.route_fn(facts) if svc.route_fn is not None
                else svc.decider.route(facts, compiled=compiled, live=live))
    _describe_decision(span, facts, decision)
    span.end()
    # What it decided on, for the record (`arrival`: the request's perf_counter arrival, to date the polls).
    routed_s = time.perf_counter() - arrival if arrival is not None else None
    view = engine_views(live, compiled.engines, routed_s) if compiled.engines else {}
    return RoutePlan(facts, decision, compiled, view)


def route_span(tracer: trace.Tracer, parent: trace.Span | None) -> trace.Span:
    """The decision's child span (rule, reason, targets, the estimate it used). Under a sampled-out
    parent it would be a NonRecordingSpan nobody reads (the upstream span carries the ids to the
    upstream): none is made then (~3 µs of the loop per request)."""
    if parent is None or not parent.is_recording():
        return trace.INVALID_SPAN
    return tracer.start_span("route", context=trace.set_span_in_context(parent))


def refuse_unroutable(plan: RoutePlan, team: str, request: ParsedRequest) -> None:
    """The client's error for a plan without targets: 403 (not allowed), 400 (too large, or embeddings of an
    alias only our engine serves) or 503."""
    decision, alias = plan.decision, request.alias
    if decision.targets:
        return
    if decision.refusal == "not_allowed":
        raise PermissionDenied(f"Team {team!r} may not use any backend that serves {alias!r}: "
                               f"{decision.reason}", code="backend_not_allowed")
    if decision.refusal == "too_large":  # waiting will not help: the client must shorten the request
        raise InvalidRequest(f"This request is too large for every backend that may serve {alias!r}: "
                             f"{decision.reason}", param="messages" if "messages" in request.routed else "prompt",
                             code="context_length_exceeded")
    if decision.refusal == EMBEDDINGS_UNSUPPORTED:
        raise InvalidRequest(f"Model {alias!r} does not serve embeddings: no backend that serves it for team "
                             f"{team!r} does ({decision.reason})", param="model", code=EMBEDDINGS_UNSUPPORTED)
    raise NoBackendAvailable(f"No backend can take this request now ({decision.refusal or 'no targets'}): "
                             f"{decision.reason}", code=decision.refusal or "no_backend",
                             retry_after_s=decision.retry_after_s or 1.0)


def _describe_decision(span: trace.Span, facts: RequestFacts, decision: RouteDecision) -> None:
    if span.is_recording():
        span.set_attributes({
            "hybridgw.rule": decision.rule, "hybridgw.route.strategy": decision.strategy,
            "hybridgw.route.reason": decision.reason, "hybridgw.route.targets": [t.backend for t in decision.targets],
            "hybridgw.route.refusal": decision.refusal, "hybridgw.over_budget": facts.over_budget,
            "hybridgw.estimated.input_tokens": facts.prompt_tokens,
            "hybridgw.estimated.output_tokens": facts.expected_output_tokens})
