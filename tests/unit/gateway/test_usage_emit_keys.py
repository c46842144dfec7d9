"""The upstream span's attributes are the request span's gen_ai.* ones, picked by name (usage_emit.GEN_AI_KEYS):
the same set, in the same order, as a prefix test of every attribute would pick."""
from __future__ import annotations

from gateway.usage_emit import GEN_AI_KEYS
from observability.tracing import usage_attributes
from observability.usage import UsageRecord


def _record(**overrides: object) -> UsageRecord:
    values: dict = dict(
        request_id="req-1", time=1_795_000_000.0, team="alpha", key_id="key-a", model_alias="m", backend="up",
        model="m-2024", rule="default", status="ok", http_status=200, stream=True, prompt_tokens=100,
        completion_tokens=20, estimated_prompt_tokens=98, estimated_completion_tokens=32, usage_source="upstream",
        cost_usd=0.000027, ttft_s=0.05, itl_p50_s=0.01, itl_p95_s=0.02, itl_max_s=0.03, e2e_s=0.3,
        upstream_latency_s=0.2, finish_reason="stop", error_type="", provider="openai")
    values.update(overrides)
    return UsageRecord(**values)


def test_every_gen_ai_attribute_a_record_can_carry_is_picked_in_order() -> None:
    for record in (_record(), _record(status="error", error_type="upstream_error", ttft_s=None, finish_reason="")):
        attrs = usage_attributes(record)
        attrs["gen_ai.response.model"] = "m-2024-dated"  # as _end_spans sets it from the answer
        by_prefix = {k: v for k, v in attrs.items() if k.startswith("gen_ai.")}
        by_name = {k: attrs[k] for k in GEN_AI_KEYS if k in attrs}
        assert list(by_name.items()) == list(by_prefix.items())
    assert "gen_ai.response.time_to_first_chunk" in usage_attributes(_record())  # the optional ones are covered
    assert set(GEN_AI_KEYS) >= {k for k in usage_attributes(_record()) if k.startswith("gen_ai.")}
