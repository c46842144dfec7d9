"""The lease book: when a reservation is served locally, what it asks of the shared store, and
where settled deltas go."""
from __future__ import annotations

from observability.limit_leases import LeaseBook
from observability.limits import plan_charges
from observability.limits_config import LimitsConfig, TeamLimits

NOW = 1_795_000_030.0


def charges(tpm: int = 640_000, tokens: int = 100, rpm: int | None = None, unchecked: tuple[str, ...] = (),
            usd_per_day: float | None = None, cost: float = 0.0):
    config = LimitsConfig(teams={"t": TeamLimits(requests_per_minute=rpm, tokens_per_minute=tpm,
                                                 usd_per_day=usd_per_day)})
    return plan_charges(config, "t", "k", tokens, cost, NOW, unchecked)


def lease(book: LeaseBook, cs, used=None, granted=None):
    """One slow reservation answered by the store as the Lua script would (counts before, grants)."""
    taken, asks = book.begin_slow(cs)
    used = used or [0] * len(cs)
    granted = granted if granted is not None else [a.grant_max for a in asks]
    book.finish_slow(cs, asks, used, granted)
    return taken, asks


def test_a_window_far_from_its_limit_is_served_from_a_lease_until_it_runs_out() -> None:
    book, cs = LeaseBook(), charges()
    assert not book.take_local(cs)
    taken, asks = lease(book, cs)
    assert taken == [0] and asks[0].amount == 100 and asks[0].grant_max == 10_000 and asks[0].margin == 80_000
    served = 0
    while book.take_local(cs):
        served += 1
    assert served == 100  # a lease of 10,000 tokens, 100 per request
    assert book.unspent(cs[0].key) == 0


def test_a_slow_reservation_spends_the_leftover_first() -> None:
    book, cs = LeaseBook(), charges(tokens=300)
    lease(book, cs)
    for _ in range(33):
        assert book.take_local(cs)
    assert book.unspent(cs[0].key) == 100  # less than one request
    taken, asks = book.begin_slow(cs)
    assert taken == [100] and asks[0].amount == 200
    assert book.unspent(cs[0].key) == 0  # taken out, so a concurrent request cannot spend it too


def test_small_limits_and_unchecked_budgets_get_no_lease() -> None:
    book = LeaseBook()
    _, asks = book.begin_slow(charges(tpm=10_000, tokens=100, rpm=117))  # leases of 156 tokens, 1 request
    assert [a.grant_max for a in asks] == [0, 0]
    _, asks = LeaseBook().begin_slow(charges(tpm=None, usd_per_day=5.0, cost=0.001, unchecked=("team",)))  # type: ignore[arg-type]
    assert [a.grant_max for a in asks] == [0]


def test_one_lease_in_flight_per_window_and_a_top_up_only_when_it_runs_short() -> None:
    book, cs = LeaseBook(), charges()
    _, first = book.begin_slow(cs)
    _, second = book.begin_slow(cs)
    assert first[0].grant_max > 0 and second[0].grant_max == 0
    book.finish_slow(cs, first, [0], [first[0].grant_max])
    _, third = book.begin_slow(cs)  # the lease still pays for the next request: no top-up
    assert third[0].grant_max == 0 and third[0].amount == 0
    book.finish_slow(cs, third, [10_100], [0])
    while book.take_local(cs):
        pass
    _, fourth = book.begin_slow(cs)
    assert fourth[0].grant_max == 10_000


def test_a_window_beside_a_busier_one_does_not_pile_up_leases() -> None:
    # requests/min leases 1,562 requests, tokens/min 15,625 tokens = 156 requests: every 156th
    # request goes to the store for tokens, and must not top up the request window each time
    book, cs = LeaseBook(), charges(tpm=1_000_000, tokens=100, rpm=100_000)
    for _ in range(5_000):
        if book.take_local(cs):
            continue
        _, asks = book.begin_slow(cs)
        book.finish_slow(cs, asks, [0, 0], [a.grant_max for a in asks])
    requests, tokens = (book.unspent(c.key) for c in cs)
    assert requests <= 1_562 + 1 and tokens <= 15_625 + 100


def test_a_refused_reservation_returns_its_leftover_to_the_store() -> None:
    book, cs = LeaseBook(), charges(tokens=300)
    lease(book, cs)
    for _ in range(33):
        book.take_local(cs)
    taken, asks = book.begin_slow(cs)
    assert book.refund(cs, asks, taken) == [(cs[0].key, -100)]
    taken, asks = book.begin_slow(cs)  # the store could not be asked: the leftover stays here
    book.put_back(cs, asks, taken)
    assert book.unspent(cs[0].key) == 0  # nothing was left after the refund


def test_settled_tokens_come_back_to_the_lease_only_while_it_is_leasing() -> None:
    book, cs = LeaseBook(), charges()
    key = cs[0].key
    lease(book, cs)
    assert book.take_local(cs) and book.unspent(key) == 9_900
    assert book.absorb(key, -60) and book.unspent(key) == 9_960
    assert not book.absorb(key, -60)  # more than one lease's size: to the store
    assert book.absorb(key, 500) and book.unspent(key) == 9_460
    assert not book.absorb(key, 20_000)  # more than the lease holds: to the store
    while book.take_local(cs):
        pass
    lease(book, cs, used=[600_000], granted=[0])  # near the limit: no lease granted any more
    assert not book.absorb(key, -60)  # given back where every replica sees it
    assert not LeaseBook().absorb(key, -60)


def test_a_lease_serves_only_the_limit_it_was_sized_for() -> None:
    book = LeaseBook()
    lease(book, charges(tpm=640_000))
    assert not book.take_local(charges(tpm=50_000))  # a reload lowered the limit
    taken, asks = book.begin_slow(charges(tpm=50_000))
    assert taken == [100] and asks[0].amount == 0  # spent in the store's check, where it is counted


def test_put_back_after_the_lease_was_dropped_lets_it_lapse() -> None:
    book, cs = LeaseBook(), charges()
    lease(book, cs)
    book.take_local(cs)
    taken, asks = book.begin_slow(charges(tokens=20_000))
    book.drain(NOW)  # a reload while the store was asked
    book.put_back(charges(tokens=20_000), asks, taken)  # the store was down: nothing to put it back in
    assert book.unspent(cs[0].key) == 0


def test_headroom_counts_what_this_replica_leased_but_has_not_spent_as_free() -> None:
    book, cs = LeaseBook(), charges(tpm=None, usd_per_day=512.0, cost=0.25)  # type: ignore[arg-type]
    lease(book, cs, used=[10 * 10**9])  # $10 spent before; +$0.25 charged, +$1 leased (1/512)
    assert book.headroom(cs, [10 * 10**9]) == (("team", 501.75),)
    assert book.take_local(cs)  # another $0.25 from the lease
    assert book.headroom(cs) == (("team", 501.5),)


def test_drain_returns_the_unspent_part_of_open_windows() -> None:
    book, cs = LeaseBook(), charges()
    lease(book, cs)
    book.take_local(cs)
    assert book.drain(NOW) == [(cs[0].key, -9_900)]
    assert book.drain(NOW) == []
    lease(book, cs)
    assert book.drain(cs[0].window_end + 1) == []  # an ended window's counter expires in the store


def test_a_book_without_leases_asks_the_store_every_time() -> None:
    book, cs = LeaseBook(lease_divisor=0), charges()
    lease(book, cs)
    assert not book.take_local(cs) and book.unspent(cs[0].key) == 0
    assert not book.absorb(cs[0].key, -60)


def test_over_budget_requests_between_normal_ones_do_not_pile_up_leases() -> None:
    # a key over its own daily budget is re-routed with its scopes' budgets unchecked: its team's month budget is
    # then charged unchecked, on the same key as the team's normal requests
    book = LeaseBook()
    config = LimitsConfig(teams={"t": TeamLimits(usd_per_month=1000.0)})
    normal = plan_charges(config, "t", "k2", 0, 0.02, NOW)
    rerouted = plan_charges(config, "t", "k1", 0, 0.02, NOW, ("team",))
    for _ in range(200):
        for cs in (normal, rerouted):
            if book.take_local(cs):
                continue
            _, asks = book.begin_slow(cs)
            book.finish_slow(cs, asks, [0], [a.grant_max for a in asks])
    assert book.unspent(normal[0].key) <= 1000 * 10**9 // 512


def test_a_window_that_reached_its_margin_stops_taking_give_backs() -> None:
    book, cs = LeaseBook(), charges()
    lease(book, cs)
    book.take_local(cs)
    _, asks = book.begin_slow(charges(tokens=100))  # no top-up: the lease still has plenty
    assert asks[0].grant_max == 0
    book.finish_slow(cs, asks, [630_000], [0])  # but the store says the window is near its limit
    assert not book.absorb(cs[0].key, -50)
