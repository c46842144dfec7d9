"""`replay --state-poll NAME=SECONDS`: how often the gateway polls an engine's state in the replayed window
(the model's `state_poll_s`), given on the command line rather than only inside a model file."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

from policies.perf_model import PerfModel


def parse_state_polls(items: Iterable[str], engines: Iterable[str]) -> dict[str, float]:
    """NAME=SECONDS items -> {engine: seconds}; ValueError naming the item for a bad one or an unknown engine."""
    known, polls = set(engines), {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            seconds = float(value) if sep else math.nan
        except ValueError:
            seconds = math.nan
        if not 0 < seconds < math.inf:
            raise ValueError(f"--state-poll {item!r}: give NAME=SECONDS with SECONDS > 0 and finite "
                             f"(e.g. local=1.5)")
        if name not in known:
            raise ValueError(f"--state-poll {item!r}: {name!r} is not an engine backend of the policy "
                             f"({', '.join(sorted(known)) or 'none'})")
        polls[name] = seconds
    return polls


def with_state_polls(perf: PerfModel, polls: Mapping[str, float]) -> PerfModel:
    """`perf` with each named engine polled every its seconds (over a fitted or file `state_poll_s`)."""
    if not polls:
        return perf
    engines = dict(perf.engines)
    for name, seconds in polls.items():
        model = perf.engine(name)
        engines[name] = replace(model, state_poll_s=seconds, source=f"{model.source}; polled every {seconds:g} s "
                                "(--state-poll)")
    return replace(perf, engines=engines)
