"""The values that flow through routing: the facts about a request and the decision taken on them."""
from __future__ import annotations

from dataclasses import dataclass, field

from observability.fast_init import fast_init
from policies.lazy_text import lazy_fields


@dataclass(frozen=True)
class Target:
    """One place a request can be sent: a backend by name and the model name it expects."""

    backend: str
    model: str


@fast_init  # built per request: slots, and an init that writes them directly (observability/fast_init.py)
@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Everything a routing rule may look at, computed before the call."""

    team: str
    model_alias: str
    prompt_tokens: int  # counted with tiktoken (the alias's hosted family, else cl100k_base)
    expected_output_tokens: int  # max_tokens (× n), else the team's recent p90, else a default
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased x-* headers
    tags: dict[str, str] = field(default_factory=dict)
    kv_bytes: dict[str, int] = field(default_factory=dict)  # per engine backend (known kv_bytes_per_token)
    blocks_needed: dict[str, int] = field(default_factory=dict)  # per engine backend with fresh state
    est_cost_usd: dict[str, float] = field(default_factory=dict)  # per candidate backend with a known price
    over_budget: bool = False
    now: float = 0.0  # unix seconds, for time-of-day rules
    prompt_tokens_by_backend: dict[str, int] = field(default_factory=dict)  # calibrated per target model
    prefix_hit_rate: dict[str, float] = field(default_factory=dict)  # engines that report one
    encoding: str = ""  # the tiktoken encoding prompt_tokens was counted with
    output_source: str = ""  # "max_tokens" | "team_p90" | "team_default" | "default"
    # P(the weak/local model's answer is not good enough), 0..1; None unless the policy uses it
    difficulty: float | None = None
    category: str | None = None  # nearest of the policy's `categories`; None unless a rule uses it
    # The most each backend may produce: max_tokens, else the max_tokens the gateway sends it (its
    # default cap), else expected_output_tokens. KV holds and context checks use it.
    output_tokens_by_backend: dict[str, int] = field(default_factory=dict)
    # Prefix affinity (only when a rule uses it): the prompt's chunk keys (policies.prefix_index), and
    # per engine that caches prefixes the share of the prompt our index says it holds (0..1).
    prefix_keys: tuple[bytes, ...] = ()
    prefix_match: dict[str, float] = field(default_factory=dict)
    # The field asking for constrained output ("response_format" json_object/json_schema, vLLM's
    # "guided_json", …); "" when none: our engine cannot honour it (policies/structured_output.py).
    # Out of the repr, which the pinned decision grids hash (test_decide_pinned, test_replay_pinned).
    structured_output: str = field(default="", repr=False)
    # An embeddings request: our engine serves none (policies/structured_output.py passes it over). Out of the repr.
    embeddings: bool = field(default=False, repr=False)

    def output_on(self, backend: str) -> int:
        return self.output_tokens_by_backend.get(backend, self.expected_output_tokens)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.expected_output_tokens


@lazy_fields("reason")  # may be given as later(fn): built when read (decide() does)
@fast_init  # as RequestFacts
@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Ordered targets to try, and which rule chose them and why (for headers, logs and traces).

    No targets means the request is refused: `refusal` says why and, for "no_capacity" and
    "no_healthy_backend", `retry_after_s` when to come back (the gateway answers 503 + Retry-After;
    "not_allowed" is the team's own limit, answered 403; "too_large": no engine could ever hold the
    request and there is nowhere to spill, answered 400 context_length_exceeded).
    """

    targets: tuple[Target, ...]
    rule: str
    reason: str
    shadow_rule: str = ""  # a shadow rule (or shadow policy) that matched: recorded, never applied
    shadow_targets: tuple[Target, ...] = ()
    strategy: str = ""  # a name from policies.strategies.STRATEGY_TYPES, or default
    refusal: str = ""  # "" | "no_capacity" | "no_healthy_backend" | "not_allowed" | "too_large"
    retry_after_s: float = 0.0
    shadow_reason: str = ""
    # slo_cost's hysteresis: (backend, SLO seconds) → out from now on; applied by the router.
    slo_out: tuple[tuple[tuple[str, float], bool], ...] = ()
    # slo_cost: (engine, the model's own predicted TTFT); the router compares it with what it observes.
    predicted_ttft: tuple[tuple[str, float], ...] = ()
    # Set by the Decider: this decision claimed the half-open probe of its first target, to be given back
    # when that call is not made or tells its health nothing (gateway/attempts.py). Out of the repr (pinned).
    probe: bool = field(default=False, repr=False, compare=False)

    @property
    def shadow_differs(self) -> bool:
        return bool(self.shadow_rule) and self.shadow_targets != self.targets
