"""What a request will cost before it runs: KV bytes and blocks on an engine, and dollars per target.

Hosted prices come from litellm's bundled price table, read as JSON (importing litellm takes
seconds), overridable in the policy; local prices are set per token or derived from $/GPU-hour.
"""
from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.live import EngineSnapshot
from policies.schema import Price

PRICE_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True, slots=True)
class TokenPrice:
    input_usd: float  # per prompt token
    output_usd: float  # per generated token
    source: str  # "policy", "litellm", "gpu_hour"

    def cost(self, prompt_tokens: int, output_tokens: int) -> float:
        return prompt_tokens * self.input_usd + output_tokens * self.output_usd


def litellm_price_table() -> dict[str, Any]:
    """litellm's bundled price table (~5k models), found without importing litellm; {} if absent."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(list(spec.submodule_search_locations)[0]) / PRICE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def hosted_price(model: str, overrides: Mapping[str, Price], table: Mapping[str, Any],
                 backend_price: Price | None = None) -> TokenPrice | None:
    """The policy's price for `model` (then the backend's), else litellm's; None when nobody knows."""
    for price in (overrides.get(model), backend_price):
        if price is not None and price.input_usd_per_mtok is not None and price.output_usd_per_mtok is not None:
            return TokenPrice(price.input_usd_per_mtok / 1e6, price.output_usd_per_mtok / 1e6, "policy")
    for key in (model, model.split("/", 1)[-1]):
        entry = table.get(key)
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            return TokenPrice(float(entry["input_cost_per_token"]),
                              float(entry.get("output_cost_per_token", 0.0)), "litellm")
    return None


def local_price(price: Price | None, snap: EngineSnapshot | None) -> TokenPrice | None:
    """A set price per token, or $/GPU-hour ÷ the engine's measured tokens/s (prefill for prompt
    tokens, decode for output), falling back to the assumed throughput while the engine is idle."""
    if price is None:
        return None
    if price.input_usd_per_mtok is not None or price.output_usd_per_mtok is not None:
        return TokenPrice((price.input_usd_per_mtok or 0.0) / 1e6, (price.output_usd_per_mtok or 0.0) / 1e6, "policy")
    if price.usd_per_gpu_hour is None:
        return None
    per_s = price.usd_per_gpu_hour / 3600.0
    prefill = (snap.prefill_tokens_per_s if snap else 0.0) or price.assumed_tokens_per_s
    decode = (snap.decode_tokens_per_s if snap else 0.0) or price.assumed_tokens_per_s
    if not prefill or not decode:
        return None
    return TokenPrice(per_s / prefill, per_s / decode, "gpu_hour")


def kv_bytes(prompt_tokens: int, output_tokens: int, kv_bytes_per_token: int) -> int:
    """KV cache the request will hold at its end: every prompt and output token's K and V."""
    return (prompt_tokens + output_tokens) * kv_bytes_per_token


def blocks_needed(prompt_tokens: int, output_tokens: int, block_size: int) -> int:
    return math.ceil((prompt_tokens + output_tokens) / max(1, block_size))


def retry_after_s(short_blocks: int, snap: EngineSnapshot | None, floor_s: float, cap_s: float = 30.0) -> float:
    """Roughly when `short_blocks` will be free: the tokens they hold ÷ the engine's decode rate."""
    if snap is None or short_blocks <= 0 or snap.decode_tokens_per_s <= 0:
        return floor_s
    return min(cap_s, max(floor_s, short_blocks * snap.block_size / snap.decode_tokens_per_s))
