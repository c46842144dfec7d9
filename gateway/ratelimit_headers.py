"""The rate-limit headers clients read, as OpenAI sends them (`x-ratelimit-{limit,remaining,reset}-
{requests,tokens}`, resets as Go-style durations like `1s`, `6m0s`, `20ms`), plus the budget headroom
(`x-hybridgw-budget-remaining-usd`). Pure: built from the limiter's reservation or its refusal."""
from __future__ import annotations

import math
from collections.abc import Iterable

from observability.limits_protocol import LimitExceeded, Reservation, WindowState

NANO = 1_000_000_000
_SUFFIX = {"requests_per_minute": "requests", "tokens_per_minute": "tokens"}
# per limit: its three header names (built once, not per response)
_NAMES = {name: (f"x-ratelimit-limit-{s}", f"x-ratelimit-remaining-{s}", f"x-ratelimit-reset-{s}")
          for name, s in _SUFFIX.items()}
BUDGET_HEADER = "x-hybridgw-budget-remaining-usd"


def duration(seconds: float) -> str:
    """Seconds as Go's time.Duration prints them, to the millisecond: 0.02 → '20ms', 1 → '1s',
    360 → '6m0s', 3725.5 → '1h2m5.5s'."""
    ms = math.ceil(round(seconds * 1000, 6))  # rounded up: a client that waits this long is past it
    if ms < 1000:
        return f"{ms}ms" if ms > 0 else "0ms"
    if ms < 60_000:  # a minute window's reset, on every response: the fewest steps
        whole, frac = divmod(ms, 1000)
        return f"{whole}.{frac:03d}".rstrip("0") + "s" if frac else f"{whole}s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)  # in integers: a float's "%.3f" and two rstrips cost twice as much
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _window_headers(windows: Iterable[WindowState]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for state in windows:
        names = _NAMES.get(state.limit_name)
        if names is None:
            continue
        limit, remaining, reset = names
        headers[limit] = str(state.limit)
        headers[remaining] = str(state.remaining)
        headers[reset] = duration(state.reset_s)
    return headers


def reservation_headers(reservation: Reservation | None) -> dict[str, str]:
    """After a reservation: the tightest request and token windows (what is left once this request's
    estimate is charged) and the USD left in the tightest budget. Nothing for unlimited teams."""
    if reservation is None:
        return {}
    headers = _window_headers(reservation.windows)
    if reservation.usd_headroom is not None:
        headers[BUDGET_HEADER] = f"{reservation.usd_headroom:.6f}"
    return headers


def refusal_headers(exc: LimitExceeded) -> dict[str, str]:
    """For a 429: the full window, 0 (or what is left, when this request was too big for it) and a
    reset equal to Retry-After."""
    if exc.window is None:
        return {}
    if exc.window.limit_name.startswith("usd"):
        return {BUDGET_HEADER: f"{exc.window.remaining / NANO:.6f}"}
    return _window_headers([exc.window])
