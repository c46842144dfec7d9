"""Clocks for tests: one a test moves by hand (set `.now`), and the UTC minute a burst fits in whole."""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class ManualClock:
    now: float

    def __call__(self) -> float:
        return self.now


def minute_with_room(longest_s: float = 25.0) -> int:
    """The UTC minute (the limiter's window) a burst of at most `longest_s` can run in whole: this one,
    or the next when less is left of it (waited for). Compare with `time.time() // 60` afterwards."""
    left = 60.0 - time.time() % 60.0
    if left < longest_s:
        time.sleep(left + 0.05)
    return int(time.time() // 60)
