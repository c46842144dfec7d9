"""The policy file's schema (pydantic, strict): backends, model aliases, teams, rules, SLOs, prices.

The gateway's config file *is* the policy file; `policies.loader` reads YAML into `Policy`.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from observability.limits_config import MAX_COUNT_LIMIT, MAX_USD_LIMIT
from policies.backend_kinds import BACKEND_KINDS, BackendKind
from policies.rule_schema import Rule, header_safe
from policies.shadow_spec import ShadowLimits, ShadowSpec, forbidden_backends

_KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
# The kinds in policies.backend_kinds, as a Literal so a typo is a schema error naming the allowed ones.
BackendKindName = Literal[tuple(BACKEND_KINDS)]  # type: ignore[valid-type]
POLICY_OWNED_FIELDS = frozenset({"model", "priority"})  # never taken from a client


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Deadlines of one upstream call. A timeout before the upstream answers moves on to the next
    target; one after it started producing (headers of a non-streamed call, a stream's first chunk)
    ends the request: a retry elsewhere would pay for the answer twice."""

    connect_s: float = 5.0
    first_byte_s: float = 60.0  # request sent → first chunk (streamed) or response headers (not streamed)
    between_chunks_s: float = 60.0  # the longest gap allowed between two streamed chunks
    total_s: float = Field(default=600.0, gt=0)  # non-streamed: request sent → whole body (may take minutes)


class Price(_Strict):
    """What tokens cost on a backend or model. Hosted: per million tokens (overrides litellm's
    table). Local: a set price per token, or $/GPU-hour divided by the engine's measured throughput."""

    input_usd_per_mtok: float | None = Field(default=None, ge=0)
    output_usd_per_mtok: float | None = Field(default=None, ge=0)
    usd_per_gpu_hour: float | None = Field(default=None, ge=0)
    assumed_tokens_per_s: float | None = Field(default=None, gt=0)  # used until throughput is measured


class BackendSpec(_Strict):
    """A place requests can go.

    kind: one of policies.backend_kinds.BACKEND_KINDS — `openai`: any OpenAI-compatible HTTP server
    (OpenAI, vLLM, SGLang, TRT-LLM, NIM, our engine); `litellm`: a provider litellm speaks to
    (Anthropic, Bedrock, Vertex, …); `engine`: our local engine, spawned and supervised by `hybridgw serve`.
    """

    kind: BackendKindName
    base_url: str | None = None  # openai: required; engine: set to use an already running one
    api_key: str | None = None  # literal key (tests); prefer api_key_env
    api_key_env: str | None = None  # environment variable holding the key
    base_url_env: str | None = None  # environment variable that overrides base_url when set
    requires_env: str | None = None  # backend is absent unless this environment variable is set
    model: str | None = None  # engine: model to load (e.g. smollm2); litellm: provider prefix
    engine_args: list[str] = Field(default_factory=list)  # extra `hybridgw engine` arguments
    timeouts: Timeouts = Field(default_factory=Timeouts)
    max_connections: int = 256
    # Live state for routing: `hybridgw` polls GET /v1/engine/state, `vllm` reads Prometheus
    # /metrics; default: hybridgw for kind engine, none otherwise.
    state: Literal["hybridgw", "vllm", "none"] | None = None
    state_url: str | None = None  # default: base_url's server + /v1/engine/state or /metrics
    kv_bytes_per_token: int | None = Field(default=None, gt=0)  # vllm: not in its metrics, say it here
    max_waiting: int = Field(default=4, ge=0)  # the queue is "short" while waiting ≤ this
    expected_ttft_s: float | None = Field(default=None, gt=0)  # prior TTFT before any is measured
    # A performance model file (`hybridgw bench --profile` writes one), relative to the policy file:
    # slo_cost's and the replay's prior for this backend (policies/perf_model_file.py).
    perf_model: str | None = Field(default=None, min_length=1)
    price: Price | None = None
    # Request fields beyond OpenAI's that clients may send to this backend (e.g. vLLM's ignore_eos,
    # min_tokens, top_k, repetition_penalty); default: our engine's own extras for kind engine, none else.
    extra_body_fields: list[str] | None = None
    # max_tokens sent when the client sets none (the engine would run to its context's end); default:
    # 512 for kind engine, none (the provider's own default) else. KV holds are sized by it.
    default_max_tokens: int | None = Field(default=None, ge=1)

    @property
    def kind_info(self) -> BackendKind:
        return BACKEND_KINDS[self.kind]

    @property
    def spawned(self) -> bool:
        """`hybridgw serve` runs this backend itself (an engine kind without base_url)."""
        return self.kind_info.spawns and not self.base_url

    @property
    def state_source(self) -> str:
        return self.state or self.kind_info.default_state

    @property
    def body_extras(self) -> frozenset[str]:
        if self.extra_body_fields is not None:
            return frozenset(self.extra_body_fields)
        return self.kind_info.body_extras

    @property
    def max_tokens_default(self) -> int | None:
        if self.default_max_tokens is not None:
            return self.default_max_tokens
        return self.kind_info.default_max_tokens

    @field_validator("extra_body_fields")
    @classmethod
    def _extras(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if name in POLICY_OWNED_FIELDS:
                raise ValueError(f"{name!r} is set by the gateway or the policy, never by a client")
        return value


class Deployment(_Strict):
    """An alias served by one backend under that backend's own model name."""

    backend: str
    model: str


class ModelAlias(_Strict):
    deployments: list[Deployment] = Field(min_length=1)
    teams: list[str] | None = None  # None: every team may use it


class Limits(_Strict):
    """Rate limits in fixed UTC minute windows; enforced by observability's limiter (absent = unlimited)."""

    requests_per_minute: int | None = Field(default=None, ge=1, le=MAX_COUNT_LIMIT)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=MAX_COUNT_LIMIT)


class Budget(_Strict):
    """Spend caps in USD (UTC day and month; enforced by observability's limiter). on_exceed: `reject` answers 429; `route` lets the request through with
    the fact `over_budget: true`, for rules to send it somewhere cheap (e.g. local)."""

    usd_per_day: float | None = Field(default=None, ge=0, le=MAX_USD_LIMIT)
    usd_per_month: float | None = Field(default=None, ge=0, le=MAX_USD_LIMIT)
    on_exceed: Literal["reject", "route"] = "reject"


class Team(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)  # `class` is a keyword

    key_hashes: list[str] = Field(default_factory=list)  # "sha256:<64 hex>" of each API key
    limits: Limits = Field(default_factory=Limits)
    budget: Budget = Field(default_factory=Budget)
    allowed_backends: list[str] | None = None  # a hard limit no rule can override (privacy)
    default_output_tokens: int | None = Field(default=None, ge=1)  # before the team's p90 is known
    slo: str | None = None  # name from `slos`
    tags: dict[str, str] = Field(default_factory=dict)
    # Sent as `priority` to engine backends (lower runs first, as in vLLM); a client's own is dropped.
    priority: int | None = None
    # Fairness on a contended engine (policies/fairness.py): the team's weight, and its class; a
    # request's x-hybridgw-priority-class header may lower it to batch, never raise it.
    share: float = Field(default=1.0, gt=0)
    priority_class: Literal["interactive", "batch"] = Field(default="interactive", alias="class")
    shadow: ShadowSpec | None = None  # sampled requests also answered by a second model (policies/shadow_spec.py)

    @field_validator("key_hashes")
    @classmethod
    def _hashes(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _KEY_HASH.match(item):
                raise ValueError(f"{item[:20]!r}… is not a key hash; write sha256:<64 lower-case hex digits>")
        return value

    @model_validator(mode="after")
    def _shadow_allowed(self) -> Team:
        # privacy first: a team's prompts never reach a backend it may not use, not even as a shadow
        if self.shadow is not None and (bad := forbidden_backends(self.shadow, self.allowed_backends)):
            raise ValueError(f"shadow.backends names {', '.join(map(repr, bad))}, which the team's allowed_backends "
                             f"({', '.join(self.allowed_backends or ())}) forbid")
        return self


class Slo(_Strict):
    ttft_p95_s: float = Field(gt=0)
    itl_p95_s: float | None = Field(default=None, gt=0)


class Health(_Strict):
    """Circuit breaker and state polling settings, shared by all backends."""

    failure_threshold: int = Field(default=3, ge=1)  # consecutive failures that open the circuit
    cooldown_s: float = Field(default=5.0, gt=0)  # first cooldown; doubles per failed probe
    max_cooldown_s: float = Field(default=60.0, gt=0)
    probe_timeout_s: float = Field(default=30.0, gt=0)  # a half-open probe with no result frees up
    poll_interval_s: float = Field(default=0.25, gt=0)
    stale_after_s: float = Field(default=2.0, gt=0)  # older engine state counts as unknown (8 missed polls)
    ttft_ewma_alpha: float = Field(default=0.2, gt=0, le=1)


class Fairness(_Strict):
    """Sharing an engine between teams by `teams.T.share` when it runs short (policies/fairness.py):
    a team at or over its share leaves the room other teams still lack of theirs (each up to the most
    it held within `demand_window_s`, plus one). Batch requests yield once the queue reaches
    `queue_fraction` of its limit or the KV left falls under `kv_free_fraction`, while a team wants
    the engine for interactive work."""

    enabled: bool = True
    queue_fraction: float = Field(default=0.5, ge=0, le=1)
    kv_free_fraction: float = Field(default=0.1, ge=0, le=1)
    demand_window_s: float = Field(default=10.0, gt=0)


class Defaults(_Strict):
    output_tokens: int = Field(default=256, ge=1)  # expected output with no max_tokens and no history
    retry_after_s: float = Field(default=1.0, gt=0)  # least Retry-After when refusing for capacity


class KeyLimits(_Strict):
    """Limits for one API key (by its public key id, as `hybridgw keys list` shows it), on top of
    its team's: a request must fit both. A key over its budget follows its team's `on_exceed`."""

    limits: Limits = Field(default_factory=Limits)
    budget: Budget = Field(default_factory=Budget)


class Policy(_Strict):
    version: Literal[1] = 1
    backends: dict[str, BackendSpec]
    models: dict[str, ModelAlias]
    teams: dict[str, Team] = Field(default_factory=dict)
    keys: dict[str, KeyLimits] = Field(default_factory=dict)  # by key id
    # A key whose team `teams` does not name: `deny` refuses to make it and refuses its requests;
    # `default` serves it as the team named `default` (its limits, budget, backends and usage).
    unknown_teams: Literal["deny", "default"] = "deny"
    slos: dict[str, Slo] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(default_factory=dict)  # by backend model name; beats litellm's table
    rules: list[Rule] = Field(default_factory=list)
    # semantic routes: category → a few example prompts; a request's `category` is the nearest one
    categories: dict[str, list[str]] = Field(default_factory=dict)
    # the difficulty model's weights file, relative to this file (e.g. retrained on a team's labelled shadow
    # pairs: `python -m policies.quality.train --labels …`); default: the shipped one
    difficulty_weights: str | None = Field(default=None, min_length=1)
    health: Health = Field(default_factory=Health)
    defaults: Defaults = Field(default_factory=Defaults)
    fairness: Fairness = Field(default_factory=Fairness)
    shadow_limits: ShadowLimits = Field(default_factory=ShadowLimits)

    @field_validator("backends", "teams")
    @classmethod
    def _header_safe_names(cls, value: dict[str, object], info: ValidationInfo) -> dict[str, object]:
        for name in value:  # backend names go into x-hybridgw-backend; team names into logs and reports
            header_safe(name, f"{info.field_name.rstrip('s')} name" if info.field_name else "name")
        return value
