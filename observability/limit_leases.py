"""Quota leased from the shared (Redis) windows, so most reservations need no round trip.

A replica that charges a window far from its limit also takes a small lease (1/64 of a per-minute
limit, 1/512 of a daily or monthly budget, when that holds at least 4 such requests) and serves the
next reservations from it locally. Leases are charged in Redis when granted, so the replicas
together never go over a limit. A window is topped up only once its lease cannot pay for the next
request, so a replica never holds more than about one lease per window. Within the last 1/8 of a
limit no lease is granted: requests there are checked in Redis one by one, each spending its
replica's leftover first. The price: when a window fills, a replica may still hold up to one lease
unspent, which the others cannot use (returned on shutdown and on reload; lost if the process is
killed). A lease serves only the limit it was sized for. Windows too small for a lease of 4
requests are counted exactly, as without leases. Pure bookkeeping, no I/O.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from observability.limits import UNCHECKED_LIMIT, Charge, usd_headroom

LEASE_DIVISOR = 64  # a per-minute window's lease is this share of its limit
BUDGET_LEASE_DIVISOR = 512  # a day's or month's USD budget lasts long: smaller leases, less to lose
MARGIN_DIVISOR = 8  # no lease is granted within this share of the limit
MIN_REQUESTS_PER_LEASE = 4  # smaller leases are not worth their slack: those windows are checked exactly


@dataclass
class _Lease:
    left: int  # charged in the shared window, not yet spent here
    window_end: float
    limit: int  # the limit the lease was sized for; it serves no other
    size: int  # one lease's size (what settles may give back to it, at most)
    used_seen: int  # the shared count right after our last charge there (for budget headroom)
    leasing: bool  # the last charge was granted a lease (the window is far from its limit)


@dataclass(frozen=True)
class SlowCharge:
    """What a reservation asks of the shared store for one window."""

    amount: int  # to charge now: the request's amount less the leftover lease it spends
    grant_max: int  # lease to add if the window has room beyond its margin
    margin: int  # room kept free of leases near the limit


class LeaseBook:
    def __init__(self, lease_divisor: int = LEASE_DIVISOR, margin_divisor: int = MARGIN_DIVISOR,
                 budget_lease_divisor: int = BUDGET_LEASE_DIVISOR) -> None:
        """lease_divisor=0 grants no leases: every reservation is checked in the shared store."""
        self._leases: dict[str, _Lease] = {}
        self._granting: set[str] = set()  # keys with a lease asked for and not yet answered
        self._lease_divisor = lease_divisor
        self._budget_lease_divisor = budget_lease_divisor
        self._margin_divisor = margin_divisor

    def lease_size(self, charge: Charge) -> int:
        """The lease a slow reservation asks for in this window (0: none, check it exactly)."""
        if not self._lease_divisor or charge.limit >= UNCHECKED_LIMIT:
            return 0
        divisor = self._budget_lease_divisor if charge.limit_name.startswith("usd") else self._lease_divisor
        size = charge.limit // divisor
        return size if size >= MIN_REQUESTS_PER_LEASE * max(charge.amount, 1) else 0

    # --- reserve ---------------------------------------------------------------------------------
    def take_local(self, charges: Sequence[Charge]) -> bool:
        """Spend leases for every window of this reservation, or spend nothing and return False."""
        leases = self._leases
        for charge in charges:
            lease = leases.get(charge.key)
            if lease is None or lease.left < charge.amount:
                return False
            if lease.limit != charge.limit and charge.limit < UNCHECKED_LIMIT:
                return False  # sized for another limit (a reload): not for this one
        for charge in charges:
            leases[charge.key].left -= charge.amount
        return True

    def begin_slow(self, charges: Sequence[Charge]) -> tuple[list[int], list[SlowCharge]]:
        """Take each window's leftover lease out of the book (so concurrent requests cannot spend it
        too) and say what to ask of the shared store."""
        taken, asks = [], []
        for charge in charges:
            lease = self._leases.get(charge.key)
            spend = min(lease.left, charge.amount) if lease is not None else 0
            if lease is not None:
                lease.left -= spend
            grant = self.lease_size(charge)
            if lease is not None and lease.left >= charge.amount and lease.limit == charge.limit:
                grant = 0  # still enough for the next request: a top-up would only pile up
            if charge.key in self._granting:
                grant = 0  # one lease in flight per window, or a burst would lease once per request
            elif grant:
                self._granting.add(charge.key)
            taken.append(spend)
            asks.append(SlowCharge(charge.amount - spend, grant, charge.limit // self._margin_divisor))
        return taken, asks

    def finish_slow(self, charges: Sequence[Charge], asks: Sequence[SlowCharge], used: Sequence[int],
                    granted: Sequence[int]) -> None:
        """The shared store charged the asks (``used``: its counts before): record the leases granted."""
        self._answered(charges, asks)
        for charge, ask, before, grant in zip(charges, asks, used, granted):
            lease = self._leases.get(charge.key)
            if lease is None:
                lease = self._leases[charge.key] = _Lease(0, charge.window_end, charge.limit, 0, 0, False)
            lease.left += grant
            if charge.limit < UNCHECKED_LIMIT:  # an over-budget request's unchecked charge sizes nothing
                lease.limit = charge.limit
            lease.size = max(lease.size, grant, ask.grant_max)
            lease.used_seen = before + ask.amount + grant
            if ask.grant_max:
                lease.leasing = grant > 0
            else:  # no top-up asked: is the window still far enough from its limit to lease?
                size = self.lease_size(charge)
                lease.leasing = bool(size) and before + ask.amount + size <= charge.limit - ask.margin

    def put_back(self, charges: Sequence[Charge], asks: Sequence[SlowCharge], taken: Sequence[int]) -> None:
        """The shared store could not be asked: the taken leftovers stay this replica's (unless the
        lease was dropped meanwhile, by a reload or the window's end: then they lapse with it)."""
        self._answered(charges, asks)
        for charge, spend in zip(charges, taken):
            lease = self._leases.get(charge.key)
            if spend and lease is not None:
                lease.left += spend

    def refund(self, charges: Sequence[Charge], asks: Sequence[SlowCharge],
               taken: Sequence[int]) -> list[tuple[str, int]]:
        """A refused reservation: its taken leftovers go back to the shared store (as negative
        deltas), so another replica can use that room now."""
        self._answered(charges, asks)
        return [(charge.key, -spend) for charge, spend in zip(charges, taken) if spend]

    def _answered(self, charges: Sequence[Charge], asks: Sequence[SlowCharge]) -> None:
        for charge, ask in zip(charges, asks):
            if ask.grant_max:
                self._granting.discard(charge.key)

    def headroom(self, charges: Sequence[Charge], used: Sequence[int] | None = None) -> tuple[tuple[str, float], ...]:
        """Per scope, USD left in its tightest budget after this charge, as this replica knows the windows."""
        if used is None:  # a local reservation: what the store held at our last charge, less our lease
            used = [self._leases[c.key].used_seen - self._leases[c.key].left - c.amount for c in charges]
        return usd_headroom(charges, used)

    def seen_used(self, charges: Sequence[Charge]) -> list[int]:
        """Each window's use after this charge as this replica knows it: the shared count at our last
        round trip (other replicas' unspent leases included), less our own lease not yet spent."""
        return [self._leases[c.key].used_seen - self._leases[c.key].left if c.key in self._leases else 0
                for c in charges]

    # --- settle ----------------------------------------------------------------------------------
    def absorb(self, key: str, delta: int) -> bool:
        """Settle ``delta`` (actual − estimate) against the local lease when it can; False: send it on.

        Tokens given back stay here only while the window is leasing (far from its limit) and the
        lease stays within one lease's size; otherwise they go back to the shared count at once,
        where every replica sees them."""
        lease = self._leases.get(key)
        if lease is None:
            return False
        if delta < 0:
            if not lease.leasing or lease.left - delta > lease.size:
                return False
            lease.left -= delta
            return True
        if lease.left >= delta:
            lease.left -= delta
            return True
        return False

    # --- upkeep ----------------------------------------------------------------------------------
    def unspent(self, key: str) -> int:
        lease = self._leases.get(key)
        return lease.left if lease is not None else 0

    def drain(self, now: float) -> list[tuple[str, int]]:
        """Forget every lease; the unspent parts of open windows, as negative deltas to return."""
        out = [(key, -lease.left) for key, lease in self._leases.items() if lease.left and lease.window_end > now]
        self._leases.clear()
        return out

    def sweep(self, now: float) -> None:
        """Drop the leases of windows that have ended (their counters expire in the store)."""
        if any(lease.window_end <= now for lease in self._leases.values()):
            self._leases = {k: v for k, v in self._leases.items() if v.window_end > now}
