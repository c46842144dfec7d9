"""Shadow traffic ("learning from production"): a team's sampled requests are also answered by the
other model of a pair, off the request path, and both answers kept for retraining the router.
The policy's part (pydantic) and the pure decisions: which request is sampled, who answers it second."""
from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field, field_validator

from observability.usage import SHADOW_RULE

__all__ = ["SHADOW_RULE", "ShadowLimits", "ShadowSpec", "forbidden_backends", "partner", "sampled"]
_SCALE = float(1 << 64)


class ShadowSpec(BaseModel):
    """`teams.T.shadow`: a share of the team's chat requests served by one of `backends` is sent to the
    other one too (not streamed, in the background); the pair of answers is kept (at most `max_pairs`
    per team, oldest dropped). `backends` is [weak, strong]: the order of the exported label columns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(ge=0, le=1)  # 0: off; sampled by a hash of the request id, so reproducible
    backends: list[str] = Field(min_length=2, max_length=2)
    seed: int = 0  # another seed samples another (equally sized) subset
    max_pairs: int = Field(default=10_000, ge=1)
    # backend → model name used where the request's alias has no deployment on that backend
    models: dict[str, str] = Field(default_factory=dict)

    @field_validator("backends")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if value[0] == value[1]:
            raise ValueError(f"the two shadow backends must differ (both are {value[0]!r})")
        return value


class ShadowLimits(BaseModel):
    """Top-level `shadow_limits`: how much background work shadowing may take on one gateway process.
    A sampled request that finds the queue full is dropped (counted), never waited for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_in_flight: int = Field(default=4, ge=1)  # shadow calls running at once
    max_queue: int = Field(default=64, ge=0)  # sampled requests waiting for a free slot
    # at shutdown, running calls may finish this long (their cost is real); then they are recorded aborted
    drain_s: float = Field(default=10.0, ge=0)


def forbidden_backends(spec: ShadowSpec, allowed: list[str] | None) -> list[str]:
    """The shadow backends a team's `allowed_backends` does not list (none when it lists no limit)."""
    if allowed is None:
        return []
    return [b for b in spec.backends if b not in allowed]


def sampled(request_id: str, seed: int, share: float) -> bool:
    """Whether this request is shadowed: blake2b(seed:request id) read as a number in [0, 1) < share.
    The same id and seed always give the same answer, on every replica."""
    if share <= 0.0:
        return False
    if share >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE < share


def partner(spec: ShadowSpec, served_backend: str) -> str | None:
    """The backend that answers second: the pair's other one; None when the request was served elsewhere."""
    first, second = spec.backends
    if served_backend == first:
        return second
    if served_backend == second:
        return first
    return None
