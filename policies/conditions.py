"""Rule conditions compiled once, at load time, into small closures over (facts, live state).

Each condition also names the fact it looked at, so a decision's reason can show the values.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from policies.decision import RequestFacts
from policies.live import LiveState
from policies.rule_schema import BackendCond, Cmp, TimeWindow, When

Getter = Callable[[RequestFacts, LiveState], Any]
Test = Callable[[Any], bool]
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Condition:
    label: str  # e.g. "prompt_tokens > 8000"
    fact: str  # e.g. "prompt_tokens"
    get: Getter
    test: Test

    def holds(self, facts: RequestFacts, live: LiveState) -> bool:
        return self.test(self.get(facts, live))


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # e.g. a header that is not a number never compares


def compile_cmp(cmp: Cmp) -> tuple[Test, str]:
    """One Cmp → a test on a value (None = absent) and a short label such as "> 8000"."""
    tests: list[Test] = []
    labels: list[str] = []
    if cmp.exists is not None:
        want = cmp.exists
        tests.append(lambda v: (v is not None) == want)
        labels.append("exists" if want else "absent")
    if cmp.eq is not None:
        eq = cmp.eq
        tests.append(lambda v: v is not None and (v == eq or str(v) == str(eq)))
        labels.append(f"== {eq!r}")
    if cmp.ne is not None:
        ne = cmp.ne
        tests.append(lambda v: v is None or (v != ne and str(v) != str(ne)))
        labels.append(f"!= {ne!r}")
    if cmp.in_ is not None:
        allowed = frozenset(str(x) for x in cmp.in_)
        tests.append(lambda v: v is not None and str(v) in allowed)
        labels.append(f"in {sorted(allowed)}")
    if cmp.not_in is not None:
        banned = frozenset(str(x) for x in cmp.not_in)
        tests.append(lambda v: v is None or str(v) not in banned)
        labels.append(f"not in {sorted(banned)}")
    for symbol, bound, fn in ((">", cmp.gt, float.__gt__), (">=", cmp.gte, float.__ge__),
                              ("<", cmp.lt, float.__lt__), ("<=", cmp.lte, float.__le__)):
        if bound is not None:
            tests.append(_ordered(fn, float(bound)))
            labels.append(f"{symbol} {bound:g}")
    if len(tests) == 1:
        return tests[0], labels[0]
    checks = tuple(tests)
    return (lambda v: all(t(v) for t in checks)), " and ".join(labels)


def _ordered(fn: Callable[[float, float], bool], bound: float) -> Test:
    def test(value: Any) -> bool:
        number = _num(value)
        return number is not None and fn(number, bound)

    return test


def _is(want: bool) -> Test:
    return lambda v: v is want


def _time_test(window: TimeWindow) -> tuple[Test, str]:
    zone = ZoneInfo(window.tz)
    days = frozenset(_DAYS.index(d) for d in window.days) if window.days else None
    start = end = None
    if window.between:
        start, end = (int(p[:2]) * 60 + int(p[3:]) for p in window.between)

    def test(unix_s: Any) -> bool:
        local = datetime.fromtimestamp(unix_s, zone)
        if days is not None and local.weekday() not in days:
            return False
        if start is None or end is None:
            return True
        minute = local.hour * 60 + local.minute
        return start <= minute < end if start <= end else (minute >= start or minute < end)

    parts = [f"{window.between[0]}–{window.between[1]}" if window.between else "",
             ",".join(window.days) if window.days else "", window.tz]
    return test, "time in " + " ".join(p for p in parts if p)


def _backend_conditions(name: str, cond: BackendCond) -> list[Condition]:
    out: list[Condition] = []
    getters: dict[str, Getter] = {
        "waiting": lambda f, live: live.num_waiting(name),  # polled queue + what we sent since
        "running": lambda f, live: (s.num_running if (s := live.engine(name)) else None),
        "kv_free_ratio": lambda f, live: _free_ratio(live, name),
        "ttft_s": lambda f, live: live.health_of(name).ttft_ewma_s,
        "fits": lambda f, live: _fits(f, live, name),
        "healthy": lambda f, live: live.health_of(name).state == "closed" and (name not in f.blocks_needed
                                                                         or live.engine(name) is not None),
    }
    for field, get in getters.items():
        value = getattr(cond, field)
        if value is None:
            continue
        test, label = (compile_cmp(value) if isinstance(value, Cmp) else (_is(value), f"is {value}"))
        out.append(Condition(f"{name}.{field} {label}", f"{name}.{field}", get, test))
    return out


def _free_ratio(live: LiveState, name: str) -> float | None:
    snap, free = live.engine(name), live.free_blocks(name)
    return None if snap is None or free is None else free / snap.num_blocks_total


def _fits(facts: RequestFacts, live: LiveState, name: str) -> bool:
    free, need = live.free_blocks(name), facts.blocks_needed.get(name)
    return free is not None and need is not None and need <= free


def _mapping_item(attr: str, key: str) -> Getter:
    return lambda f, live: getattr(f, attr).get(key)


def _fact(name: str) -> Getter:
    return lambda f, live: getattr(f, name)


def compile_when(when: When) -> list[Condition]:
    """Every condition of a `when` block; all must hold (an `any` list is one condition)."""
    out: list[Condition] = []
    for field, fact in (("team", "team"), ("model", "model_alias"), ("prompt_tokens", "prompt_tokens"),
                        ("expected_output_tokens", "expected_output_tokens"), ("total_tokens", "total_tokens"),
                        ("difficulty", "difficulty"), ("category", "category")):
        cmp = getattr(when, field)
        if cmp is not None:
            test, label = compile_cmp(cmp)
            out.append(Condition(f"{field} {label}", fact, _fact(fact), test))
    for field in ("stream", "over_budget"):
        if getattr(when, field) is not None:
            want = getattr(when, field)
            out.append(Condition(f"{field} is {want}", field, _fact(field), _is(want)))
    for kind in ("headers", "tags"):
        for key, cmp in getattr(when, kind).items():
            test, label = compile_cmp(cmp)
            out.append(Condition(f"{kind[:-1]} {key} {label}", f"{kind[:-1]} {key}", _mapping_item(kind, key), test))
    if when.time is not None:
        test, label = _time_test(when.time)
        out.append(Condition(label, "now", _fact("now"), test))
    for name, cond in when.state.items():
        out.extend(_backend_conditions(name, cond))
    if when.any:
        alternatives = [compile_when(alt) for alt in when.any]
        label = "any(" + " | ".join(" & ".join(c.label for c in alt) or "always" for alt in alternatives) + ")"
        out.append(Condition(label, "any", lambda f, live: (f, live),
                             lambda fl: any(all(c.holds(*fl) for c in alt) for alt in alternatives)))
    return out
