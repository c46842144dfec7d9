"""The values that flow through routing: the facts about a request and the decision taken on them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """One place a request can be sent: a backend by name and the model name it expects."""

    backend: str
    model: str


@dataclass(frozen=True)
class RequestFacts:
    """Everything a routing rule may look at, computed before the call."""

    team: str
    model_alias: str
    prompt_tokens: int  # counted with tiktoken, calibrated per target model
    expected_output_tokens: int  # max_tokens, else the team's recent p90
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased x-* headers
    tags: dict[str, str] = field(default_factory=dict)
    kv_bytes: dict[str, int] = field(default_factory=dict)  # per candidate backend
    blocks_needed: dict[str, int] = field(default_factory=dict)  # per local engine backend
    est_cost_usd: dict[str, float] = field(default_factory=dict)  # per candidate backend
    over_budget: bool = False
    now: float = 0.0  # unix seconds, for time-of-day rules


@dataclass(frozen=True)
class RouteDecision:
    """Ordered targets to try, and which rule chose them and why (for headers, logs and traces)."""

    targets: tuple[Target, ...]
    rule: str
    reason: str
    shadow_rule: str = ""  # set when a shadow rule would have decided differently
    shadow_targets: tuple[Target, ...] = ()
