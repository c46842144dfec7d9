"""The request path shared by chat, completions and embeddings: auth → body → alias → facts →
route → limits → dispatch → response, with one UsageRecord at the end whatever happens."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry import trace
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import dispatch, upstream_body
from gateway.attempts import AttemptBook, give_back_probe
from gateway.auth import authorization, check_key_alias
from gateway.backends.base import UpstreamRequest
from gateway.disconnect import DisconnectGuard
from gateway.errors import (
    GatewayError,
    ModelNotFound,
    NoBackendAvailable,
    UpstreamError,
    error_info,
)
from gateway.exchange import Exchange, ParsedRequest
from gateway.outcome import body_outcome
from gateway.ratelimit_headers import refusal_headers
from gateway.request_body import read_json_body
from gateway.route_plan import plan_route, refuse_unroutable
from gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    RequestBody,
    parse_body,
)
from gateway.services import Services
from gateway.shadow_tap import tap
from gateway.stream_tally import StreamTally
from gateway.streaming import SSERelayResponse
from gateway.token_count import count_off_loop
from gateway.usage_emit import OPERATIONS, finish
from observability.limits_protocol import LimitExceeded
from observability.tracing import extract_context, inject_traceparent
from policies.compiled import CompiledPolicy
from policies.decision import Target
from policies.facts import PromptScores


@dataclass(frozen=True)
class Endpoint:
    name: str  # "chat", "completions", "embeddings"
    path: str  # upstream path under the backend's base URL
    schema: type[RequestBody]
    can_stream: bool


CHAT = Endpoint("chat", "chat/completions", ChatCompletionRequest, True)
COMPLETIONS = Endpoint("completions", "completions", CompletionRequest, True)
EMBEDDINGS = Endpoint("embeddings", "embeddings", EmbeddingRequest, False)
UNKNOWN_MODEL = "unknown"  # the model alias recorded for a request whose model name is not served
REQUESTED_MODEL_CHARS = 200


def error_response(headers: dict[str, str], exc: BaseException) -> Response:
    """The OpenAI-shaped error answer for `exc`, with `headers` (the request's ids, route, rate limits)."""
    info = error_info(exc)
    if info.retry_after_s is not None:
        headers["retry-after"] = str(max(1, round(info.retry_after_s)))
    if isinstance(exc, LimitExceeded):
        headers.update(refusal_headers(exc))  # x-ratelimit-reset-* equals Retry-After
    return Response(orjson.dumps(info.body()), status_code=info.status, headers=headers,
                    media_type="application/json")


def _record_error(svc: Services, ex: Exchange, exc: BaseException) -> Response:
    info = error_info(exc)
    # "rejected": refused before any upstream was involved; "error": the upstream side failed.
    upstream_side = isinstance(exc, (UpstreamError, NoBackendAvailable)) or info.status == 500
    ex.fail("error" if upstream_side else "rejected", info.status, info.type, info.message)
    if info.status == 500:
        svc.log.error("request %s failed", ex.request_id, exc_info=exc)
    finish(svc, ex)
    return error_response(ex.response_headers(), exc)


def request_headers(raw: list[tuple[bytes, bytes]]) -> Mapping[str, str]:
    """The request's headers as Starlette's Headers reads them (get: a name's first value; items: every
    pair): a plain dict when no name repeats (the same answers, each header decoded once instead of a scan
    of them all per lookup), else Starlette's Headers itself."""
    plain = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}
    return plain if len(plain) == len(raw) else Headers(raw=raw)


async def handle(svc: Services, request: Request, endpoint: Endpoint) -> Response:
    """One model request, start to end (gateway/hot_routes.py calls it): every error is answered here,
    OpenAI-shaped, and every request that names a team leaves one record."""
    headers = request_headers(request.scope["headers"])
    ex = Exchange.begin(endpoint.name, headers.get("x-request-id"))
    try:
        ex.key = key = await svc.authenticate(authorization(headers))
    except GatewayError as exc:  # no team to charge (unknown key or team, key store down): not recorded
        return error_response(ex.response_headers(), exc)
    ex.tags.update(key.spec.tags)  # on every record of the key, refusals (404, 403) included
    # A caller that traces (W3C traceparent) gets the gateway's span inside its own trace.
    parent = extract_context(headers) if "traceparent" in headers else None
    ex.span = svc.telemetry.tracer.start_span(f"POST /v1/{endpoint.path}", context=parent,
                                              kind=trace.SpanKind.SERVER)
    guard: DisconnectGuard | None = None
    try:
        body = await read_json_body(request, svc.settings.max_body_bytes, headers.get("content-length"))
        ex.request = parse_request(endpoint, body, parse_body(endpoint.schema, body), headers)
        await _plan(svc, ex, endpoint, ex.request)
        guard = DisconnectGuard(request.receive)
        if ex.request.stream:
            return tap(svc, ex, body, await _start_stream(svc, ex, endpoint, ex.request, guard))
        response = await _complete(svc, ex, endpoint, ex.request)
        guard.close()
        return tap(svc, ex, body, response)  # shadow traffic: a sampled request's answer (gateway/shadow_tap.py)
    except (GatewayError, LimitExceeded) as exc:
        if guard is not None:
            guard.close()
        return _record_error(svc, ex, exc)
    except asyncio.CancelledError:
        if guard is not None and guard.absorb():
            return _aborted(svc, ex, guard)
        if guard is not None:
            guard.close()
        # Cancelled from outside (shutdown's grace limit): the request still leaves its record.
        ex.fail("error", 503, "shutdown", "the gateway shut down before the response")
        finish(svc, ex)
        raise
    except ClientDisconnect:
        return _aborted(svc, ex, guard)
    except Exception as exc:  # a bug: still an OpenAI-shaped 500 and a record, never a traceback out
        if guard is not None:
            guard.close()
        return _record_error(svc, ex, exc)


def _aborted(svc: Services, ex: Exchange, guard: DisconnectGuard | None) -> Response:
    if guard is not None:
        guard.close()
    ex.fail("aborted", 499, "client_disconnected", "client disconnected before the response")
    finish(svc, ex)
    return Response(status_code=499)


def parse_request(endpoint: Endpoint, body: dict[str, Any], parsed: Any, headers: Mapping[str, str]) -> ParsedRequest:
    """The request as the rest of the path needs it, from its validated body and its headers."""
    options = getattr(parsed, "stream_options", None)
    alias: str = parsed.model
    routed = body if endpoint is not EMBEDDINGS else {"model": alias, "prompt": body.get("input", "")}
    return ParsedRequest(
        alias=alias, stream=bool(getattr(parsed, "stream", False)) and endpoint.can_stream,
        client_wants_usage=bool(options and options.include_usage), body=body, routed=routed,
        headers={k: v for k, v in headers.items() if k.startswith("x-") and k != "x-request-id"},
        off_loop=count_off_loop(headers.get("content-length")), embeddings=endpoint is EMBEDDINGS)


async def _plan(svc: Services, ex: Exchange, endpoint: Endpoint, request: ParsedRequest) -> None:
    """Alias checks, the route plan and the limit reservation: everything before the call."""
    try:
        svc.catalog.check_alias(ex.team, request.alias)
    except ModelNotFound:
        # A name the client made up never becomes a rollup key or a metric label (10,000 bogus
        # names would be 10,000 of each); the raw name stays in this request's record tags only.
        ex.alias = UNKNOWN_MODEL
        ex.tags["requested_model"] = request.alias[:REQUESTED_MODEL_CHARS]
        raise
    ex.alias = request.alias
    check_key_alias(ex.key_spec, ex.key_id, ex.alias)  # 403 for an alias the team has but the key may not use
    if svc.limiter is not None and request.off_loop:
        # Where counting is costly, the cheap refusal first: a team over its rpm costs no counting.
        # (Elsewhere reserve() below decides the same without a second round trip to Redis.)
        await svc.limiter.check_requests(ex.team, ex.key_id, key_limits=ex.key_spec.limits)
    ex.span.update_name(f"{OPERATIONS.get(endpoint.name, endpoint.name)} {ex.alias}")  # GenAI span naming
    # one policy version for the request's whole life
    ex.route = plan = await plan_route(svc, request, ex.team, ex.span, compiled=svc.policy.current,
                                       arrival=ex.clock.arrival)
    refuse_unroutable(plan, ex.team, request)
    ex.estimated_prompt_tokens = plan.facts.prompt_tokens
    ex.estimated_completion_tokens = 0 if endpoint is EMBEDDINGS else plan.facts.expected_output_tokens
    if svc.limiter is not None:
        await _reserve(svc, ex, request)


async def _reserve(svc: Services, ex: Exchange, request: ParsedRequest) -> None:
    """Hold the estimate against the team's and key's limits. A scope (team or key) over its USD budget
    whose on_exceed says `route` is routed again with `over_budget` (rules send it somewhere cheap)
    instead of refused; only that scope's budget goes unchecked, the other's still refuses."""
    assert svc.limiter is not None and ex.route is not None
    tokens = ex.estimated_prompt_tokens + ex.estimated_completion_tokens
    unchecked: set[str] = set()
    while True:  # at most once per scope: each pass either returns, raises or unchecks one more
        plan = ex.route
        cost = plan.facts.est_cost_usd.get(plan.decision.targets[0].backend, 0.0)
        try:
            ex.reservation = await svc.limiter.reserve(ex.request_id, ex.team, ex.key_id, tokens, cost,
                                                       unchecked=frozenset(unchecked), key_limits=ex.key_spec.limits)
            return
        except LimitExceeded as exc:
            if not exc.limit.startswith("usd") or exc.scope in unchecked or on_exceed(plan.policy, ex, exc.scope) != "route":
                give_back_probe(svc, plan)  # refused: no call
                raise
            scope = exc.scope
        except BaseException:  # the limiter failed, the client left: no call either
            give_back_probe(svc, plan)
            raise
        if not unchecked:
            give_back_probe(svc, plan)  # routed again: this plan's call is not made
            facts = plan.facts  # counted and scored once
            ex.route = await plan_route(svc, request, ex.team, ex.span, compiled=plan.policy, over_budget=True,
                                        prompt_tokens=facts.prompt_tokens,
                                        scores=PromptScores(facts.difficulty, facts.category), arrival=ex.clock.arrival)
            refuse_unroutable(ex.route, ex.team, request)
            ex.tags["over_budget"] = "true"
        unchecked.add(scope)


def on_exceed(compiled: CompiledPolicy, ex: Exchange, scope: str) -> str:
    """What a spent USD budget of this scope means: the key's own on_exceed for its budget, else the team's."""
    if scope == "key" and ex.key_spec.on_exceed is not None:
        return ex.key_spec.on_exceed
    return compiled.team(ex.team).budget.on_exceed


def _request_maker(ex: Exchange, endpoint: Endpoint, request: ParsedRequest, compiled: CompiledPolicy,
                   log: logging.Logger) -> dispatch.RequestFor:
    def request_for(target: Target) -> UpstreamRequest:
        # Only OpenAI's fields (and the backend's allowed extras) go on: the body never configures a backend.
        built = upstream_body.build(endpoint.path, request.body, target.model,
                                    upstream_body.rules_for(compiled, target.backend, ex.team), stream=request.stream)
        if built.dropped:
            log.debug("request %s: fields not sent to %s: %s", ex.request_id, target.backend, ", ".join(built.dropped))
        # The upstream span is open by now (AttemptBook.started): engines join the trace through it.
        headers: dict[str, str] = {}
        if ex.upstream_span is not None:
            inject_traceparent(headers, ex.upstream_span)
        return UpstreamRequest(endpoint.path, built.body, ex.request_id, request.stream, headers)

    return request_for


async def _complete(svc: Services, ex: Exchange, endpoint: Endpoint, request: ParsedRequest) -> Response:
    plan = ex.route
    assert plan is not None
    maker = _request_maker(ex, endpoint, request, plan.policy, svc.log)
    done = await dispatch.complete(plan.decision.targets, svc.backends, maker, ex.clock, AttemptBook(svc, ex))
    ex.attempts = done.attempts
    ex.outcome = body_outcome(svc, ex, done.response.data)
    return AnsweredResponse(svc, ex, done.response.content)


class AnsweredResponse(Response):
    """A non-streamed answer whose usage record is made once its bytes are handed to the server: the
    record, the access-log line and the spans' ends (~0.1–0.2 ms of the loop) are then not between the
    upstream's answer and the client's, and the record's E2E ends where the body left, as a stream's does.
    Its head is built here, as Starlette's Response builds it (the same headers, in the same order), without
    Response's generic checks (~1/2 of its cost per request, by callgrind: docs/benchmarks.md "round 6")."""

    def __init__(self, svc: Services, ex: Exchange, content: bytes) -> None:
        self.svc, self.ex = svc, ex
        self.status_code, self.body, self.background = 200, content, None
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in ex.response_headers().items()]
        self.raw_headers += [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.body})
        finally:  # also when the send is cancelled (shutdown): the answer was complete
            finish(self.svc, self.ex)


async def _start_stream(svc: Services, ex: Exchange, endpoint: Endpoint, request: ParsedRequest,
                        guard: DisconnectGuard) -> Response:
    plan = ex.route
    assert plan is not None
    maker = _request_maker(ex, endpoint, request, plan.policy, svc.log)
    book = AttemptBook(svc, ex)
    opened = await dispatch.open_stream(plan.decision.targets, svc.backends, maker, ex.clock, book)
    ex.attempts = opened.attempts
    return SSERelayResponse(svc, ex, opened, StreamTally(request.client_wants_usage), guard, book,
                            _output_cap(svc, ex, plan.policy, opened.target))


def _output_cap(svc: Services, ex: Exchange, compiled: CompiledPolicy, target: Target) -> int | None:
    """How many output tokens the hard USD budgets (`on_exceed: reject`, the team's or the key's) still
    pay for: what was reserved plus the least headroom left after it (None: no hard budget, or free output)."""
    held = ex.reservation
    if held is None:
        return None
    # a soft budget re-routes new requests; it never cuts one already streaming
    headroom = held.usd_left([s for s in ("team", "key") if on_exceed(compiled, ex, s) == "reject"])
    if headroom is None:
        return None
    base = svc.pricing.cost_usd(target, ex.estimated_prompt_tokens, 0)
    per_token = svc.pricing.cost_usd(target, ex.estimated_prompt_tokens, 1) - base
    if per_token <= 0:
        return None
    return max(0, int((held.cost_usd + headroom - base) / per_token))
