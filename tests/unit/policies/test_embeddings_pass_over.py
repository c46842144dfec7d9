"""Embeddings (facts.embeddings, set by gateway/route_plan.py): our engine serves none,
so every strategy passes it over (here or elsewhere, `state: hybridgw`) and keeps a vLLM server; an alias
only our engine serves, or a rule whose every target is ours, refuses them (embeddings_unsupported, a 400);
a strategy's own refusal with another target left stands."""
from __future__ import annotations

import pytest

from policies.structured_output import EMBEDDINGS_UNSUPPORTED

from .test_structured_output import RULES, _decide


@pytest.mark.parametrize("strategy", [*RULES, None])
def test_every_strategy_passes_our_engines_over(strategy: str | None) -> None:
    decision = _decide(strategy, "", embeddings=True)
    backends = [t.backend for t in decision.targets]
    assert backends and "local" not in backends and "elsewhere" not in backends, decision.reason
    assert "embeddings: passed over" in decision.reason


@pytest.mark.parametrize("strategy", ["kv_fit", None])
def test_an_alias_only_our_engine_serves_refuses_them(strategy: str | None) -> None:
    decision = _decide(strategy, "", model="tiny", embeddings=True)
    assert decision.targets == () and decision.refusal == EMBEDDINGS_UNSUPPORTED, decision.reason
    assert "local serves none" in decision.reason


def test_a_chat_request_still_goes_to_the_engine() -> None:
    assert _decide("kv_fit", "").targets[0].backend == "local"
