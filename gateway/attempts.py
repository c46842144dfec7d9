"""Dispatch's observer for one request's attempts: the KV hold on the engine tried, backend health from
each attempt's outcome (and its TTFT), one upstream span per attempt; a half-open probe given back."""
from __future__ import annotations

from opentelemetry import trace

from gateway.errors import UpstreamError, against_health
from gateway.exchange import Exchange, RoutePlan
from gateway.services import Services
from policies.decision import Target


def give_back_probe(svc: Services, plan: RoutePlan | None) -> None:
    """The half-open probe `plan`'s decision claimed, given back when its call is not made (limits refused
    it, it was routed again) or told its health nothing (a 4xx, the client gone before the result): kept,
    the backend would read as open to every client until probe_timeout_s."""
    if plan is not None and plan.decision.probe:
        svc.live.health.release_probe(plan.decision.targets[0].backend)


class AttemptBook:
    """Dispatch's observer for one request: holds KV on the engine tried, feeds backend health
    (failures before the first byte; success with its TTFT at the first content chunk: dispatch
    reports a non-streamed call's, the relay a stream's) and opens one upstream span per attempt."""

    __slots__ = ("ex", "probe_out", "svc")

    def __init__(self, svc: Services, ex: Exchange) -> None:
        self.svc, self.ex = svc, ex
        self.probe_out = False  # the probe's call (the decision's first target) is made and has no result yet

    def started(self, target: Target) -> None:
        ex, svc = self.ex, self.svc
        ex.target = target
        plan = ex.route
        if plan is not None and plan.decision.probe and target == plan.decision.targets[0]:
            self.probe_out = True
        if ex.facts is not None:
            ex.hold = svc.live.reserve(target.backend, ex.facts)
        if ex.upstream_span is not None:
            ex.upstream_span.end()
        ex.upstream_span = svc.telemetry.tracer.start_span(
            f"upstream {target.backend}", context=trace.set_span_in_context(ex.span), kind=trace.SpanKind.CLIENT)

    def failed(self, target: Target, error: UpstreamError) -> None:
        # A 4xx other than 408/429 is the request's fault, not the backend's; so is a request too
        # long for this backend's context (or needing JSON output of it), even where dispatch goes on.
        if against_health(error):
            self.probe_out = False  # settled: the failure re-opens the circuit
            self.svc.live.record_result(target.backend, ok=False)
        else:
            self.abandoned()
        self.svc.live.release(self.ex.hold)
        self.ex.hold = None

    def abandoned(self) -> None:
        """The call in flight ends with no news of the backend's health (a 4xx; the client left or the gateway
        shut down before its result): the probe it carried, if any, is given back for the next call."""
        if self.probe_out:
            self.probe_out = False
            give_back_probe(self.svc, self.ex.route)

    def succeeded(self, target: Target) -> None:
        """The one place a success and its TTFT (upstream sent → first content chunk) are recorded."""
        self.probe_out = False  # settled: the success closes the circuit
        clock = self.ex.clock
        ttft = (clock.first_chunk - clock.upstream_sent
                if clock.first_chunk is not None and clock.upstream_sent is not None else None)
        self.svc.live.record_result(target.backend, ok=True, ttft_s=ttft)
