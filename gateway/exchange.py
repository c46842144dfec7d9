"""One request's record as it moves through the gateway: the frozen value each stage hands on (caller,
parsed request, route plan, usage outcome, ending), kept side by side until it becomes one UsageRecord.
Also the request ids: the gateway's own (the record's key, never the client's) and the client's x-request-id."""
from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import KeyInfo
from gateway.dispatch import Attempt
from gateway.key_spec import KeySpec
from gateway.ratelimit_headers import reservation_headers
from gateway.timing import RequestClock
from observability.fast_init import fast_init
from observability.limits_protocol import Reservation
from observability.usage import EngineView
from policies.compiled import CompiledPolicy
from policies.decision import RequestFacts, RouteDecision, Target
from policies.router import Hold

_MAX_ID_LEN = 128
_NO_KEY_SPEC = KeySpec()


def new_request_id() -> str:
    """The gateway's own id of a request: unique, so no client can make two records collide."""
    return "req_" + secrets.token_hex(12)


def client_request_id_from(header: str | None) -> str:
    """The client's x-request-id when it is a short printable ASCII token, else "" (ignored: a
    header that cannot be echoed or forwarded byte for byte is not worth refusing a request over)."""
    if header and len(header) <= _MAX_ID_LEN and header.isascii() and header.isprintable() and " " not in header:
        return header
    return ""


def id_headers(request_id: str, client_request_id: str) -> dict[str, str]:
    # x-request-id echoes the client's own id (what it will search its logs for), else ours;
    # x-hybridgw-request-id is always ours: the usage record's key.
    return {"x-request-id": client_request_id or request_id, "x-hybridgw-request-id": request_id}


def unrecorded_id_headers(client_header: str | None) -> dict[str, str]:
    """The id headers of a request that leaves no usage record (models, admin, console): a fresh id of ours."""
    return id_headers(new_request_id(), client_request_id_from(client_header))


@fast_init  # built per request (observability/fast_init.py)
@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What the client asked for, read from its body once the alias is known to be its to use (proxy)."""

    alias: str  # the model alias asked for
    stream: bool  # streamed (only where the endpoint can stream)
    client_wants_usage: bool  # stream_options.include_usage: the usage chunk is relayed, else stripped
    body: dict[str, Any]  # the client's JSON body; the upstream body is cut from it per target
    routed: dict[str, Any]  # the body the policy sees (embeddings: its input as the prompt)
    headers: dict[str, str]  # the client's x-* headers, for rules that match on them
    off_loop: bool  # whether counting its prompt is worth a worker thread (a large body)
    embeddings: bool = False  # an embeddings request (its input routed as the prompt)


@fast_init  # built per request (observability/fast_init.py)
@dataclass(frozen=True, slots=True)
class RoutePlan:
    """route_plan.plan_route's answer: the request's facts and the decision, by one policy version (a
    reload mid-request changes nothing). A refusal is a plan without targets (the record keeps its rule)."""

    facts: RequestFacts
    decision: RouteDecision
    policy: CompiledPolicy
    view: Mapping[str, EngineView] = field(default_factory=dict)  # the engines as the decision saw them


@fast_init  # built per request (observability/fast_init.py)
@dataclass(frozen=True, slots=True)
class UsageOutcome:
    """What the upstream's answer came to (gateway/outcome.py): its tokens (reported, else counted)."""

    prompt_tokens: int | None  # None: not reported (the estimate stands in)
    completion_tokens: int
    usage_source: str  # "upstream" | "counted"
    finish_reason: str = ""
    response_model: str = ""  # the model the upstream says answered (gen_ai.response.model)


@dataclass(frozen=True, slots=True)
class Ending:
    """How the request ended, for the record and the access log."""

    status: str = "ok"  # ok | error | aborted | rejected
    http_status: int = 200
    error_type: str = ""
    error_message: str = ""


OK = Ending()


@dataclass(slots=True)
class Exchange:
    """Each group of fields has one writer, named beside it; the values it holds are frozen, except the
    clock (timings accumulate: dispatch and the relay mark it) and the tags (added to as the request goes)."""

    request_id: str  # Exchange.begin
    endpoint: str  # "chat", "completions", "embeddings"
    clock: RequestClock
    client_request_id: str = ""  # the client's x-request-id ("" when absent or not a sane token)
    key: KeyInfo | None = None  # proxy.handle, once authenticated
    tags: dict[str, str] = field(default_factory=dict)  # the key's, then proxy's (requested_model, over_budget)
    span: Any = None  # proxy.handle: opentelemetry Span of the whole request; usage_emit ends it
    alias: str = ""  # proxy: the alias asked for (UNKNOWN_MODEL for one not served)
    request: ParsedRequest | None = None  # proxy, after the alias check
    route: RoutePlan | None = None  # proxy, from route_plan.plan_route (again when over budget)
    estimated_prompt_tokens: int = 0  # proxy, once routed: what the limits reserve against
    estimated_completion_tokens: int = 0
    reservation: Reservation | None = None  # proxy._reserve
    target: Target | None = None  # AttemptBook: the target that served (or was last tried)
    hold: Hold | None = None  # AttemptBook: KV blocks held on the engine being tried; usage_emit releases
    upstream_span: Any = None  # AttemptBook: the current attempt's span; usage_emit ends it
    attempts: tuple[Attempt, ...] = ()  # proxy, from dispatch's result: the targets passed over
    outcome: UsageOutcome | None = None  # proxy (non-streamed) or the relay, once the answer is in
    ending: Ending = OK  # fail(): proxy or the relay

    @classmethod
    def begin(cls, endpoint: str, client_header: str | None) -> Exchange:
        """A new exchange with a fresh gateway id, keeping the client's x-request-id beside it."""
        return cls(new_request_id(), endpoint, RequestClock(), client_request_id_from(client_header))

    # Read-only views for the many readers of the caller and the route.
    @property
    def team(self) -> str:
        return self.key.team if self.key is not None else ""

    @property
    def key_id(self) -> str:
        return self.key.key_id if self.key is not None else ""

    @property
    def key_spec(self) -> KeySpec:
        return self.key.spec if self.key is not None else _NO_KEY_SPEC

    @property
    def stream(self) -> bool:
        return self.request is not None and self.request.stream

    @property
    def facts(self) -> RequestFacts | None:
        return self.route.facts if self.route is not None else None

    @property
    def decision(self) -> RouteDecision | None:
        return self.route.decision if self.route is not None else None

    def response_headers(self) -> dict[str, str]:
        headers = id_headers(self.request_id, self.client_request_id)
        if self.route is not None:
            headers["x-hybridgw-route-rule"] = self.route.decision.rule
        if self.target is not None:
            headers["x-hybridgw-backend"] = self.target.backend
        headers.update(reservation_headers(self.reservation))  # x-ratelimit-*, budget headroom
        return headers

    def fail(self, status: str, http_status: int, error_type: str, message: str) -> None:
        self.ending = Ending(status, http_status, error_type, message)
