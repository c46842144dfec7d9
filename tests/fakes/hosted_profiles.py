"""SIMULATED hosted-model latency: per-model TTFT and decode-speed distributions, the output
length, and a requests-per-second limit (pure; tests/fakes/hosted_sim.py serves them over HTTP).

The defaults are round figures of the order public leaderboards (e.g. Artificial Analysis,
artificialanalysis.ai, 2024–25) published for these models' APIs: they make a benchmark's hosted
side plausible, they are not measurements of any provider and must never be reported as such.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    ttft_median_s: float  # TTFT ~ lognormal with this median ...
    ttft_p90_s: float  # ... and this 90th percentile
    tokens_per_s: float  # decode speed of one request ~ normal(mean, sd), drawn once per request
    tokens_per_s_sd: float
    output_median: int = 200  # answer length when the request sets no max_tokens (lognormal, sigma 0.6)

    def ttft(self, rng: random.Random) -> float:
        sigma = math.log(self.ttft_p90_s / self.ttft_median_s) / 1.2816  # z of the 90th percentile
        return rng.lognormvariate(math.log(self.ttft_median_s), sigma)

    def gap_s(self, rng: random.Random) -> float:
        """Seconds per token for one request (its own speed), at least 1 ms."""
        speed = max(rng.gauss(self.tokens_per_s, self.tokens_per_s_sd), self.tokens_per_s / 4)
        return max(1.0 / speed, 0.001)

    def output_tokens(self, rng: random.Random, max_tokens: int | None) -> int:
        drawn = max(1, round(rng.lognormvariate(math.log(self.output_median), 0.6)))
        return min(drawn, max_tokens) if max_tokens else drawn


@dataclass(frozen=True)
class Draw:
    """One simulated answer: its length, its TTFT, its seconds per token, and its id's random bits."""

    output_tokens: int
    ttft_s: float
    gap_s: float
    id_bits: int

    @property
    def least_e2e_s(self) -> float:
        """The simulator's sleeps before the last token: no client can see it sooner."""
        return self.ttft_s + self.gap_s * (self.output_tokens - 1)


def draw(profile: Profile, rng: random.Random, max_tokens: int | None) -> Draw:
    """One request's draws from `rng`, always in this order: a seeded simulator's answers can then be
    replayed outside it (tests/integration/bench/test_hosted_sim.py checks its timings that way)."""
    output_tokens = profile.output_tokens(rng, max_tokens)
    ttft, gap = profile.ttft(rng), profile.gap_s(rng)
    return Draw(output_tokens, ttft, gap, rng.getrandbits(48))


PROFILES: dict[str, Profile] = {
    "gpt-4o-mini": Profile(0.40, 0.80, 75.0, 15.0),
    "gpt-4o": Profile(0.45, 0.90, 90.0, 20.0),
    "gpt-4.1-mini": Profile(0.40, 0.80, 80.0, 15.0),
    "claude-3-5-haiku": Profile(0.65, 1.20, 55.0, 10.0),
    "claude-3-5-sonnet": Profile(0.90, 1.60, 60.0, 12.0),
}
DEFAULT_PROFILE = PROFILES["gpt-4o-mini"]


def profile_for(model: str, profiles: dict[str, Profile]) -> Profile:
    """Exact name, else the longest known prefix (dated snapshots), else gpt-4o-mini's."""
    name = model.rsplit("/", 1)[-1]
    if name in profiles:
        return profiles[name]
    matches = [k for k in profiles if name.startswith(k)]
    return profiles[max(matches, key=len)] if matches else profiles.get("default", DEFAULT_PROFILE)


def parse_profile(text: str) -> tuple[str, Profile]:
    """`NAME=TTFT_MEDIAN_MS,TTFT_P90_MS,TOK_PER_S,TOK_PER_S_SD`."""
    name, _, numbers = text.partition("=")
    values = [float(v) for v in numbers.split(",")]
    if not name or len(values) != 4 or min(values[:3]) <= 0 or values[1] < values[0]:
        raise ValueError(
            f"cannot read profile {text!r}: NAME=TTFT_MEDIAN_MS,TTFT_P90_MS,TOK_PER_S,TOK_PER_S_SD"
        )
    if values[1] == values[0]:  # a fixed TTFT: the lognormal needs a spread, give it a negligible one
        values[1] = values[0] * 1.0001
    return name, Profile(values[0] / 1000, values[1] / 1000, values[2], values[3])


class RateLimit:
    """Requests per second with a one-second burst (a token bucket), as hosted APIs' RPM limits act."""

    def __init__(self, per_s: float | None) -> None:
        self.per_s = per_s
        self.tokens = per_s or 0.0
        self.last: float | None = None

    def allow(self, now: float) -> bool:
        if not self.per_s:
            return True
        if self.last is not None:
            self.tokens = min(self.per_s, self.tokens + (now - self.last) * self.per_s)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
