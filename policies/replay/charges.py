"""What the replay charges a served request: its cost in the outcomes (hosted or per-token engine prices;
a GPU-hour engine is costed per window elsewhere) and the spend its budget is settled with, as the gateway does."""
from __future__ import annotations

from policies.compiled import CompiledPolicy
from policies.estimator import local_price
from policies.live import LiveState
from policies.replay.traffic import TrafficRecord


def request_cost(compiled: CompiledPolicy, backend: str, model: str, record: TrafficRecord) -> float:
    """The request's cost at the backend's price: hosted per token, an engine per token when it has such a
    price ($/GPU-hour is per window, not per request: 0 here)."""
    price = compiled.hosted_prices.get((backend, model))
    if price is None and backend in compiled.engines:
        spec = compiled.policy.backends[backend]
        local = compiled.policy.prices.get(model) or spec.price
        if local is not None and local.usd_per_gpu_hour is None:  # per-token price; $/hour is per window
            return ((local.input_usd_per_mtok or 0.0) * record.prompt_tokens
                    + (local.output_usd_per_mtok or 0.0) * record.output_tokens) / 1e6
    return price.cost(record.prompt_tokens, record.output_tokens) if price is not None else 0.0


def settled_cost(compiled: CompiledPolicy, backend: str, model: str, record: TrafficRecord, live: LiveState) -> float:
    """The spend the gateway settles a finished request's budget with (PolicyRouter.cost_usd): an
    engine at its price per token, a GPU-hour one at its chargeback (from the state seen when routed)."""
    if backend not in compiled.engines:
        price = compiled.hosted_prices.get((backend, model))
    else:
        spec = compiled.policy.backends[backend]
        price = local_price(compiled.policy.prices.get(model) or spec.price, live.engine(backend))
    return price.cost(record.prompt_tokens, record.output_tokens) if price is not None else 0.0
