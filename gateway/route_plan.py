"""Plan a request's route: its prompt counted (and scored), its facts and the Decider's decision, a
`route` span describing it; a policy refusal becomes the client's error (403, 400 or 503)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from gateway.errors import InvalidRequest, NoBackendAvailable, PermissionDenied
from gateway.exchange import Exchange
from gateway.services import Services
from gateway.token_count import measure_prompt
from policies.compiled import CompiledPolicy
from policies.decision import RequestFacts, RouteDecision
from policies.errors import RoutingError
from policies.facts import PromptScores


async def plan_route(svc: Services, ex: Exchange, body: Mapping[str, Any], headers: Mapping[str, str],
                     *, over_budget: bool = False, compiled: CompiledPolicy | None = None,
                     prompt_tokens: int | None = None, scores: PromptScores | None = None,
                     off_loop: bool = False) -> None:
    """Set ex.facts and ex.decision; raise the client-facing error when the policy refuses.
    The prompt is counted (and scored) here unless `prompt_tokens` (and `scores`) are given; in a
    worker thread when `off_loop`."""
    # The decision gets a child span of its own (rule, reason, targets, the estimate it used).
    span = (svc.telemetry.tracer.start_span("route", context=trace.set_span_in_context(ex.span))
            if ex.span is not None else trace.INVALID_SPAN)
    compiled = compiled or svc.policy.current
    try:
        if prompt_tokens is None:
            prompt_tokens, scores = await measure_prompt(svc.decider, compiled, body, ex.team, off_loop=off_loop)
        live = svc.live.live_state()  # one view of the engines for the facts and the decision
        facts = svc.decider.build_facts(body, ex.team, headers=headers, over_budget=over_budget, compiled=compiled,
                                        prompt_tokens=prompt_tokens, live=live, scores=scores)
    except RoutingError as exc:
        span.end()
        raise InvalidRequest(exc.message, param=exc.param, code=exc.code) from None
    decision = (svc.route_fn(facts) if svc.route_fn is not None
                else svc.decider.route(facts, compiled=compiled, live=live))
    ex.facts, ex.decision = facts, decision
    _describe_decision(span, facts, decision)
    span.end()
    if decision.targets:
        return
    if decision.refusal == "not_allowed":
        raise PermissionDenied(f"Team {ex.team!r} may not use any backend that serves {ex.alias!r}: "
                               f"{decision.reason}", code="backend_not_allowed")
    if decision.refusal == "too_large":  # waiting will not help: the client must shorten the request
        raise InvalidRequest(f"This request is too large for every backend that may serve {ex.alias!r}: "
                             f"{decision.reason}", param="messages" if "messages" in body else "prompt",
                             code="context_length_exceeded")
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
