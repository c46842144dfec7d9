"""The end of a bench's main(): the load average at the end, each kind of failure counted, the exit code."""
from __future__ import annotations

import os
from collections import Counter


def load_average(all_three: bool = False) -> str:
    """The 1-minute load average (with all_three, the 1-, 5- and 15-minute ones)."""
    values = os.getloadavg() if all_three else os.getloadavg()[:1]
    return " ".join(f"{v:.2f}" for v in values)


def finish(errors: Counter[str], *, all_three: bool = False) -> int:
    """Print the load average at the end and each failure counted; 1 if anything failed, else 0."""
    print(f"load average at end: {load_average(all_three)}")
    for what, count in sorted(errors.items()):
        print(f"failed: {what} × {count}")
    return 1 if errors else 0
