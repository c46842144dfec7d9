"""A clock a test moves by hand: call it for the time, set `.now` to move it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ManualClock:
    now: float

    def __call__(self) -> float:
        return self.now
