"""A shadow pair: one request's prompt answered by two models (the one that served the client and the
shadow), as the pair store keeps it and `hybridgw shadow export` writes it; and the store's protocol."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Answer:
    backend: str
    model: str
    text: str  # the assistant's content ("" when it failed)
    status: str  # "ok" or "error"
    latency_s: float | None  # request sent → whole answer (served: the client's E2E)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""
    usage_source: str = "upstream"  # or "counted": the upstream reported no usage


@dataclass(frozen=True)
class ShadowPair:
    request_id: str  # the served request's gateway id
    team: str
    time: float  # the served request's arrival, unix seconds
    model_alias: str
    messages: list[dict[str, Any]]  # the prompt as the client sent it
    served: Answer  # what the client got
    shadow: Answer  # what the pair's other backend answered
    backends: tuple[str, str]  # the policy's [weak, strong] order, for label columns
    difficulty: float | None = None  # the request's score when the policy computed one
    category: str | None = None
    stream: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def answer_of(self, backend: str) -> Answer | None:
        return self.served if self.served.backend == backend else self.shadow if self.shadow.backend == backend else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["backends"] = list(self.backends)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShadowPair:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["served"] = Answer(**known["served"])
        known["shadow"] = Answer(**known["shadow"])
        known["backends"] = tuple(known["backends"])
        return cls(**known)


class PairStore(Protocol):
    """Pairs kept per team, newest `cap` of them. Sync: the gateway calls it in a worker thread."""

    def add(self, pair: ShadowPair, cap: int) -> None: ...

    def pairs(self, team: str, limit: int | None = None) -> list[ShadowPair]:
        """The team's pairs, oldest first (only that team's: the team is part of every key)."""
        ...

    def count(self, team: str) -> int: ...

    def close(self) -> None: ...
