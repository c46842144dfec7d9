"""One request's state as it moves through the gateway, filled in stage by stage; at the end it
becomes one frozen UsageRecord. Also: the request ids: the gateway's own (the record's key, never
the client's) and the client's x-request-id, kept beside it for tracing."""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from gateway.key_spec import KeySpec
from gateway.ratelimit_headers import reservation_headers
from gateway.timing import RequestClock
from observability.limits_protocol import Reservation
from policies.compiled import CompiledPolicy
from policies.decision import RequestFacts, RouteDecision, Target
from policies.router import Hold

_MAX_ID_LEN = 128


def new_request_id() -> str:
    """The gateway's own id of a request: unique, so no client can make two records collide."""
    return "req_" + secrets.token_hex(12)


def client_request_id_from(header: str | None) -> str:
    """The client's x-request-id when it is a short printable ASCII token, else "" (ignored: a
    header that cannot be echoed or forwarded byte for byte is not worth refusing a request over)."""
    if header and len(header) <= _MAX_ID_LEN and header.isascii() and header.isprintable() and " " not in header:
        return header
    return ""


@dataclass(slots=True)
class Exchange:
    request_id: str
    endpoint: str  # "chat", "completions", "embeddings"
    clock: RequestClock
    stream: bool = False
    client_wants_usage: bool = False
    team: str = ""
    key_id: str = ""
    key_spec: KeySpec = field(default_factory=KeySpec)  # the key's own scope: aliases, limits, budget (key store)
    alias: str = ""
    facts: RequestFacts | None = None
    decision: RouteDecision | None = None
    policy: CompiledPolicy | None = None  # the version that planned it; a reload mid-request changes nothing
    hold: Hold | None = None  # KV blocks held on the engine being tried
    target: Target | None = None  # the target that served (or was last tried)
    estimated_prompt_tokens: int = 0
    estimated_completion_tokens: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_source: str = "counted"
    status: str = "ok"  # ok | error | aborted | rejected
    http_status: int = 200
    error_type: str = ""
    error_message: str = ""
    finish_reason: str = ""
    response_model: str = ""  # the model the upstream says answered (gen_ai.response.model)
    attempts: tuple[Any, ...] = ()
    reservation: Reservation | None = None
    span: Any = None  # opentelemetry Span of the whole request
    upstream_span: Any = None
    tags: dict[str, str] = field(default_factory=dict)
    client_request_id: str = ""  # the client's x-request-id ("" when absent or not a sane token)

    @classmethod
    def begin(cls, endpoint: str, client_header: str | None) -> Exchange:
        """A new exchange with a fresh gateway id, keeping the client's x-request-id beside it."""
        return cls(new_request_id(), endpoint, RequestClock(), client_request_id=client_request_id_from(client_header))

    def response_headers(self) -> dict[str, str]:
        # x-request-id echoes the client's own id (what it will search its logs for), else ours;
        # x-hybridgw-request-id is always ours: the usage record's key.
        headers = {"x-request-id": self.client_request_id or self.request_id,
                   "x-hybridgw-request-id": self.request_id}
        if self.decision is not None:
            headers["x-hybridgw-route-rule"] = self.decision.rule
        if self.target is not None:
            headers["x-hybridgw-backend"] = self.target.backend
        headers.update(reservation_headers(self.reservation))  # x-ratelimit-*, budget headroom
        return headers

    def fail(self, status: str, http_status: int, error_type: str, message: str) -> None:
        self.status = status
        self.http_status = http_status
        self.error_type = error_type
        self.error_message = message
