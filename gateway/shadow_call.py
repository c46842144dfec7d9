"""One shadow call: the body sent, the upstream call (news of its backend's health, as a client's call is; a
half-open probe it carried given back on a 4xx), its answer; and what it leaves in the ledger and the access log."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway import upstream_body
from gateway.access_log import log_access
from gateway.backends.base import UpstreamRequest
from gateway.errors import against_health
from gateway.shadow_record import shadow_record
from gateway.stream_tally import response_text, upstream_counts
from observability.limits_protocol import Reservation
from observability.shadow_pairs import Answer
from policies.decision import Target

if TYPE_CHECKING:
    from gateway.exchange import Exchange
    from gateway.services import Services
    from gateway.shadow import ShadowJob


async def call(svc: Services, job: ShadowJob, sent: float, probe: bool) -> Answer:
    """The call (`probe`: its backend's half-open probe) and its answer, an error answer when it failed."""
    ex, target = job.ex, job.target
    compiled = ex.route.policy if ex.route else svc.policy.current
    built = upstream_body.build("chat/completions", job.body, target.model,
                                upstream_body.rules_for(compiled, target.backend, ex.team), stream=False)
    # one whole answer: the client's streaming fields do not go on (the allow-list keeps them)
    sent_body = {k: v for k, v in built.body.items() if k not in ("stream", "stream_options")}
    request = UpstreamRequest("chat/completions", sent_body, ex.request_id + ".shadow", False)
    # The outcome is news of the backend called (the pair's other one, never the served one): its
    # health learns from it as from a client's call; no TTFT, as a whole answer has no first token.
    live = svc.live
    try:
        upstream = await svc.backends[target.backend].complete(request)
    except Exception as exc:  # UpstreamError, or anything the backend let out
        if against_health(exc):
            live.record_result(target.backend, ok=False)
        elif probe:  # a 4xx tells its health nothing: the probe is there for the next call
            live.health.release_probe(target.backend)
        return Answer(target.backend, target.model, "", "error", time.perf_counter() - sent,
                      error=f"{type(exc).__name__}: {exc}"[:300])
    live.record_result(target.backend, ok=True)
    return _answer(svc, ex, target, upstream.data, time.perf_counter() - sent)


def _answer(svc: Services, ex: Exchange, target: Target, data: dict[str, Any], latency_s: float) -> Answer:
    """The shadow's answer; tokens as the upstream reports them, else counted (as for served requests)."""
    text = response_text(data)
    counts = upstream_counts(data.get("usage"), "prompt_tokens")
    if counts is not None:
        return Answer(target.backend, target.model, text, "ok", latency_s, *counts)
    return Answer(target.backend, target.model, text, "ok", latency_s, ex.estimated_prompt_tokens,
                  svc.tokens.count_text(text, ex.alias), usage_source="counted")


def record(svc: Services, job: ShadowJob, answer: Answer, sent_wall: float, reservation: Reservation | None) -> None:
    """The call's UsageRecord to the ledger (and the access log), the limits settled off this task."""
    usage = shadow_record(svc, job, answer, sent_wall)
    try:
        svc.usage_sink.submit(usage)
    except Exception as exc:
        svc.log.warning("usage sink refused record %s: %r", usage.request_id, exc)
    if svc.settings.access_log and svc.access_log.isEnabledFor(20):  # the line is made on the log thread
        log_access(svc.access_log, usage, answer.error, ())
    if reservation is not None and svc.limiter is not None:
        svc.spawn(svc.limiter.settle(reservation, usage.total_tokens, usage.cost_usd))
