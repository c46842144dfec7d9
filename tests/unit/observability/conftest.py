"""Shared builders for observability unit tests: UsageRecords with sensible defaults."""
from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from observability.usage import UsageRecord

T0 = 1_795_000_000.0  # a fixed instant (2026-11-18 UTC) so periods are deterministic
_ids = itertools.count()


def record(**overrides: Any) -> UsageRecord:
    values: dict[str, Any] = dict(
        request_id=f"req-{next(_ids)}", time=T0, team="alpha", key_id="key-a", model_alias="gpt-4o-mini",
        backend="openai", model="gpt-4o-mini-2024-07-18", rule="default", status="ok", http_status=200,
        stream=True, prompt_tokens=100, completion_tokens=20, estimated_prompt_tokens=98,
        estimated_completion_tokens=32, usage_source="upstream", cost_usd=0.000027, ttft_s=0.05,
        itl_p50_s=0.01, itl_p95_s=0.02, itl_max_s=0.03, e2e_s=0.3, itl_gaps_s=(0.01, 0.02, 0.03),
    )
    values.update(overrides)
    return UsageRecord(**values)


@pytest.fixture
def make_record() -> Callable[..., UsageRecord]:
    return record
