"""`hybridgw serve` with no --config: the embedded default policy (slo_cost) spawns SmolLM2 and routes
to it while it fits and is predicted to meet the SLO, to OpenAI (here: the fake, through
OPENAI_API_KEY / OPENAI_BASE_URL) when it does not, and works local-only when no hosted key is set."""
from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.integration.routing.conftest import Fake, serving

HOSTED_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL")
TOO_LONG = 9000  # output tokens: beyond SmolLM2's 8192-token context


def test_default_policy_local_while_it_fits_else_openai(fake: Fake, tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-upstream-test", "OPENAI_BASE_URL": f"{fake.url}/v1"}
    with serving(tmp_path, None, env=env) as gw:
        r = gw.chat("smollm2", max_tokens=4)
        assert (r.status, r.backend, r.rule) == (200, "local", "cheapest-within-slo")
        assert r.model == "SmolLM2-135M-Instruct" and 0 < r.body.usage.completion_tokens <= 4
        big = gw.chat("smollm2", max_tokens=TOO_LONG)
        assert (big.status, big.backend, big.rule) == (200, "openai", "cheapest-within-slo")
        seen = fake.last_request()
        assert seen["body"]["model"] == "gpt-4o-mini" and seen["body"]["max_tokens"] == TOO_LONG
        assert seen["headers"]["authorization"] == "Bearer sk-upstream-test"
        hosted = gw.chat("gpt-4o-mini")
        assert (hosted.status, hosted.backend) == (200, "openai")
        with gw.client() as client:
            assert sorted(m.id for m in client.models.list()) == ["gpt-4o-mini", "smollm2"]


def test_default_policy_without_a_hosted_key_is_local_only(tmp_path: Path) -> None:
    with serving(tmp_path, None, unset=HOSTED_ENV) as gw:
        r = gw.chat("smollm2", max_tokens=4)
        assert (r.status, r.backend, r.rule) == (200, "local", "cheapest-within-slo")
        with gw.client() as client:
            assert [m.id for m in client.models.list()] == ["smollm2"]
        # Start-up says where requests go; the README's quick-start snippet prints what it says.
        assert "hybridgw: backend openai: off (its requires_env variable OPENAI_API_KEY is not set)" in gw.log()
        assert "hybridgw: model smollm2 -> local\n" in gw.log()
        readme = gw.chat("smollm2", max_tokens=64, temperature=0,
                         messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert readme.body.choices[0].message.content == "The capital of France is Paris."
        gone = gw.chat("gpt-4o-mini")  # its only backend is absent without the key
        assert gone.status == 404 and gone.body["code"] == "model_not_found"
        big = gw.chat("smollm2", max_tokens=TOO_LONG)  # nowhere to spill, and waiting would not help
        assert big.status == 400 and big.body["code"] == "context_length_exceeded" and big.retry_after is None
        assert "exceed its context of 8192" in big.body["message"]
        with gw.client() as client, pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="smollm2", input="hello")  # our engine serves none: not its 404
        assert refused.value.body["code"] == "embeddings_unsupported" and refused.value.body["param"] == "model"
