"""Long prompts after short ones: the gateway's prompt count is calibrated to the engine's own (its
chat template adds a fixed ~20 tokens, its tokenizer ~1.1× on text), so a long prompt that fits the
engine's 4096-token context runs there and one that does not is spilled before the call."""
from __future__ import annotations

from policies.tokens import TokenCounter
from tests.integration.routing.conftest import Gateway

SENTENCE = "The gateway counts every prompt before it decides where the request should run. "


def _prompt(tokens: int) -> list[dict[str, str]]:
    """A user message of about `tokens` tokens as the gateway counts them (cl100k_base)."""
    counter = TokenCounter()
    text = SENTENCE * (tokens // counter.count_text(SENTENCE, "cl100k_base"))
    return [{"role": "user", "content": text}]


def test_long_prompt_that_fits_runs_local_and_one_past_the_context_spills(roomy: Gateway) -> None:
    for _ in range(3):  # short prompts: the template's overhead dominates their engine count (~3.5×)
        assert roomy.chat("chat", max_tokens=4).backend == "local"
    fits = roomy.chat("chat", max_tokens=4, messages=_prompt(1500))
    assert (fits.status, fits.backend) == (200, "local"), fits
    assert 1000 < fits.body.usage.prompt_tokens < 4096 - 4
    too_long = roomy.chat("chat", max_tokens=4, messages=_prompt(5000))
    assert (too_long.status, too_long.backend) == (200, "hosted"), too_long
    assert "skipped" not in roomy.record_for(too_long.request_id)  # never sent to the engine
    refused = roomy.chat("private", max_tokens=4, messages=_prompt(5000))
    assert refused.status == 400 and refused.body["code"] == "context_length_exceeded"
    assert "exceed its context of 4096" in refused.body["message"]  # the gateway's refusal, not the engine's
