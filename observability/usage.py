"""The usage record: one per request (streamed, aborted and failed ones included), and its sink.

This is the contract between the gateway (which fills it in) and the ledger (which stores it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from observability.fast_init import dict_init
from observability.rollups import record_fields

# The rule of a shadow call's record (gateway/shadow.py): the team's spend, not a request a client made.
# Reports count it in cost only; replay and anything counting traffic from the ledger leave it out.
SHADOW_RULE = "shadow"


@dataclass(frozen=True, slots=True)
class EngineView:
    """One engine as the gateway saw it when it routed a request: its polled state and what the router
    made of it (the queue and KV it decided on). A replay compares its own view with this one."""

    age_s: float  # how old the polled snapshot was (the poll interval and the round trip make it stale)
    waiting: int  # the snapshot's queue
    running: int
    free_blocks: int  # the snapshot's free KV blocks
    queued: int | None  # the queue the router estimated (the snapshot + what it sent since); None: unknown
    free: int | None  # KV blocks free after this gateway's holds; None: unknown (stale)
    polled_s: float | None = None  # when that poll was taken, seconds from the request's arrival (< 0: before)

    @classmethod
    def from_mapping(cls, data: Any) -> EngineView | None:
        """From its stored dict; None for anything else (a reader must not fail on one odd record)."""
        try:
            return cls(float(data["age_s"]), int(data["waiting"]), int(data["running"]), int(data["free_blocks"]),
                       None if data.get("queued") is None else int(data["queued"]),
                       None if data.get("free") is None else int(data["free"]),
                       None if data.get("polled_s") is None else float(data["polled_s"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


@dict_init  # built per request on the event loop: ~half the build cost of dataclass's __init__
@dataclass(frozen=True)
class UsageRecord:
    request_id: str  # the gateway's own id: the record's key in every store (never the client's)
    time: float  # arrival, unix seconds
    team: str
    key_id: str  # short public id of the API key, never the key itself
    model_alias: str  # what the client asked for
    backend: str  # name of the backend that served it ("" when none did)
    model: str  # the backend's model name
    rule: str  # the route rule that chose the backend
    status: str  # "ok", "error", "aborted" (client went away), "rejected" (limits/validation)
    http_status: int
    stream: bool
    prompt_tokens: int  # upstream's numbers when given, else counted
    completion_tokens: int
    estimated_prompt_tokens: int  # the gateway's count before the call
    estimated_completion_tokens: int
    usage_source: str  # "upstream" or "counted"
    cost_usd: float
    ttft_s: float | None  # arrival → first content chunk at the gateway
    itl_p50_s: float | None
    itl_p95_s: float | None
    itl_max_s: float | None
    e2e_s: float  # arrival → last byte sent
    upstream_latency_s: float | None = None  # upstream call sent → first content chunk
    error_type: str = ""
    finish_reason: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    # Added by observability (all defaulted, so older producers and stored records still load):
    provider: str = ""  # gen_ai.provider.name of the backend ("openai", "anthropic", "hybridgw.engine", ...)
    operation: str = "chat"  # gen_ai.operation.name: "chat", "text_completion", "embeddings"
    kv_bytes: int = 0  # estimated KV-cache bytes of this request on the engine that served it
    itl_gaps_s: tuple[float, ...] = ()  # every inter-chunk gap at the gateway, in order
    client_request_id: str = ""  # the client's x-request-id, kept for tracing; never a key
    # Each engine of the policy as the router saw it when it routed this request (empty: no engine,
    # or not routed); `hybridgw replay` checks its simulated gateway's view against it.
    engine_view: dict[str, EngineView] = field(default_factory=dict)
    # The body field that asked for constrained output ("response_format" json_*, "guided_json", …; "" none, as
    # in ledgers from before it): routing passed our engine over for it, and `hybridgw replay` does too.
    structured_output: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def is_shadow(self) -> bool:
        """A shadow call (spend only), not a client's request."""
        return self.rule == SHADOW_RULE

    @cached_property
    def rollup_fields(self) -> dict[str, float]:
        """rollups.record_fields(self), computed once per record: the poison check and the store's rollups
        both read it on the ledger's thread. Shared: read it, never change it (the record is frozen)."""
        return record_fields(self)

    def to_dict(self) -> dict[str, Any]:
        # what dataclasses.asdict gives for these flat fields, at a tenth of its cost (ledger hot loop)
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["tags"] = dict(self.tags)
        if self.engine_view:  # plain dicts: every store encodes the record with json
            data["engine_view"] = {name: {slot: getattr(view, slot) for slot in EngineView.__slots__}
                                   for name, view in self.engine_view.items()}
        else:
            data["engine_view"] = {}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageRecord:
        known = {f for f in cls.__dataclass_fields__}
        kept = {k: v for k, v in data.items() if k in known}
        if "itl_gaps_s" in kept:  # JSON brings lists back; keep the frozen record immutable
            kept["itl_gaps_s"] = tuple(kept["itl_gaps_s"] or ())
        if "engine_view" in kept:
            views = kept["engine_view"] if isinstance(kept["engine_view"], dict) else {}
            kept["engine_view"] = {name: view for name, raw in views.items()
                                   if (view := EngineView.from_mapping(raw)) is not None}
        return cls(**kept)


class UsageSink(Protocol):
    """Takes finished records; must not block the request path (queue and write later)."""

    def submit(self, record: UsageRecord) -> None: ...
