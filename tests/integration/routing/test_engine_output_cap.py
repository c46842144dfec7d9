"""A request without max_tokens gets the engine backend's default_max_tokens (issue #9 item 6): the
engine stops there instead of running to the end of its context; a client's own value is kept."""
from __future__ import annotations

from pathlib import Path

from tests.integration.routing.conftest import MESSAGES, serving

POLICY = """
version: 1
backends:
  local: {kind: engine, model: tiny-random, default_max_tokens: 9}
models:
  tiny: {deployments: [{backend: local, model: tiny-random}]}
teams: {red: {}}
"""


def test_engine_gets_the_policys_max_tokens_when_the_client_sets_none(tmp_path: Path) -> None:
    with serving(tmp_path, POLICY) as gw:
        assert "hybridgw: backend local: on, engine tiny-random at http://127.0.0.1:" in gw.log()
        with gw.client() as client:
            # ignore_eos (an extra kind engine allows): only max_tokens can stop it, here 9 not 4096.
            reply = client.chat.completions.create(model="tiny", messages=MESSAGES, extra_body={"ignore_eos": True})
            assert reply.usage is not None and reply.usage.completion_tokens == 9
            assert reply.choices[0].finish_reason == "length"
            own = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12,
                                                 extra_body={"ignore_eos": True})
            assert own.usage is not None and own.usage.completion_tokens == 12  # kept, not clamped
            chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, stream=True,
                                                         stream_options={"include_usage": True},
                                                         extra_body={"ignore_eos": True}))
            assert [c.usage.completion_tokens for c in chunks if c.usage] == [9]
