"""KV bytes and blocks, hosted prices (litellm's bundled table, policy overrides), local prices."""
from __future__ import annotations

import subprocess
import sys

import pytest

from policies.estimator import (
    blocks_needed,
    hosted_price,
    kv_bytes,
    litellm_price_table,
    local_price,
    retry_after_s,
)
from policies.schema import Price

from .support import engine

# SmolLM2-135M: 30 layers × 3 KV heads × head_dim 64 × (K and V) × 2 bytes (bf16).
SMOLLM2_KV_BYTES_PER_TOKEN = 2 * 30 * 3 * 64 * 2


def test_kv_bytes_and_blocks() -> None:
    assert SMOLLM2_KV_BYTES_PER_TOKEN == 23040
    assert kv_bytes(1000, 256, SMOLLM2_KV_BYTES_PER_TOKEN) == 1256 * 23040 == 28_938_240
    assert blocks_needed(1000, 256, 16) == 79  # 1256 / 16 = 78.5, rounded up
    assert blocks_needed(16, 0, 16) == 1
    assert blocks_needed(17, 0, 16) == 2


def test_litellm_table_is_read_without_importing_litellm() -> None:
    probe = ("import sys; from policies.estimator import litellm_price_table as t; "
             "n = len(t()); print(n, 'litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 1000 and out[1] == "False"


def test_hosted_price_from_the_table() -> None:
    table = litellm_price_table()
    price = hosted_price("gpt-4o-mini", {}, table)
    assert price is not None and price.source == "litellm"
    assert price.input_usd == pytest.approx(0.15e-6) and price.output_usd == pytest.approx(0.6e-6)
    assert price.cost(1000, 500) == pytest.approx(1000 * 0.15e-6 + 500 * 0.6e-6)
    assert hosted_price("openai/gpt-4o-mini", {}, table) == price  # provider prefix dropped
    assert hosted_price("no-such-model", {}, table) is None


def test_policy_price_beats_the_table_and_backend_price() -> None:
    table = {"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}
    override = {"m": Price(input_usd_per_mtok=0.5, output_usd_per_mtok=1.0)}
    backend = Price(input_usd_per_mtok=9.0, output_usd_per_mtok=9.0)
    assert hosted_price("m", override, table, backend).input_usd == pytest.approx(0.5e-6)
    assert hosted_price("m", {}, table, backend).input_usd == pytest.approx(9e-6)
    assert hosted_price("m", {}, table).source == "litellm"


def test_local_price_from_gpu_hour_and_measured_throughput() -> None:
    price = Price(usd_per_gpu_hour=3.6, assumed_tokens_per_s=100.0)
    busy = local_price(price, engine(prefill_tps=2000.0, decode_tps=500.0))
    # $3.6/h = $0.001/s: prompt tokens at 2000/s, output at 500/s.
    assert busy is not None and busy.input_usd == pytest.approx(0.001 / 2000) and busy.output_usd == pytest.approx(0.001 / 500)
    idle = local_price(price, engine())  # idle engine measures 0 tok/s: the assumed rate applies
    assert idle is not None and idle.output_usd == pytest.approx(0.001 / 100)
    assert local_price(Price(usd_per_gpu_hour=3.6), engine()) is None  # unknown, not free
    flat = local_price(Price(input_usd_per_mtok=0.02, output_usd_per_mtok=0.05), None)
    assert flat is not None and flat.cost(1_000_000, 1_000_000) == pytest.approx(0.07)
    assert local_price(None, engine()) is None


def test_retry_after_from_decode_rate() -> None:
    snap = engine(decode_tps=32.0)
    assert retry_after_s(10, snap, 1.0) == pytest.approx(10 * 16 / 32.0)  # 5 s
    assert retry_after_s(1, snap, 1.0) == 1.0  # floor
    assert retry_after_s(10_000, snap, 1.0) == 30.0  # cap
    assert retry_after_s(10, engine(), 2.0) == 2.0  # idle: no rate known
