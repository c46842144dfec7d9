"""`replay --engine-share NAME=SHARE`: the share of a core an engine's steps got in a window (its step
thread's CPU seconds ÷ the steps' wall seconds, from /v1/engine/state's totals), so step times fitted on one
window carry to another whose host was busier or quieter (docs/replay.md, "Across runs: the CPU share")."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

from policies.perf_model import PerfModel


def parse_shares(items: Iterable[str], engines: Iterable[str]) -> dict[str, float]:
    """NAME=SHARE items -> {engine: share}; ValueError naming the item for a bad one or an unknown engine."""
    known, shares = set(engines), {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            share = float(value) if sep else float("nan")
        except ValueError:
            share = float("nan")
        if not 0 < share < math.inf:  # inf: steps of no time (and a model file json cannot read back)
            raise ValueError(f"--engine-share {item!r}: give NAME=SHARE with SHARE > 0 (e.g. local=0.54)")
        if name not in known:
            raise ValueError(f"--engine-share {item!r}: {name!r} is not an engine backend of the policy "
                             f"({', '.join(sorted(known)) or 'none'})")
        shares[name] = share
    return shares


def with_shares(perf: PerfModel, shares: Mapping[str, float], fitted: bool) -> PerfModel:
    """`perf` with each named engine's share: `fitted` (its step times were fitted to this window): recorded
    as the model's cpu_share; otherwise its step times carried to it (EngineModel.at_cpu_share)."""
    engines = dict(perf.engines)
    for name, share in shares.items():
        model = perf.engine(name)
        engines[name] = (replace(model, cpu_share=share, source=f"{model.source}; at CPU share {share:g}") if fitted
                         else model.at_cpu_share(share))
    return replace(perf, engines=engines)
