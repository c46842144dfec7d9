"""The quality floor and semantic routes end to end: `hybridgw serve` with a tiny local engine and
the fake OpenAI upstream as the hosted model, driven by the official SDK. An easy prompt runs
locally, a hard one (by the shipped difficulty score) goes hosted, code goes hosted by its category."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from policies.quality.load import load_scorer
from tests.integration.routing.conftest import Fake, Gateway, fake, serving  # noqa: F401  (fixture)
from tests.support.policy_text import engine_and_hosted

FLOOR = 0.2
EASY = "hello there, how are you today?"
HARD = ("For how many positive integers k does the ordinary decimal representation of the integer k! end "
        "in exactly 99 zeros?\nA. nan\nB. One\nC. Four\nD. Five\nAnswer:")
CODE = "Fix this Python function: it raises a KeyError when the dict is empty."


def _policy(fake_url: str) -> str:
    return "\nversion: 1\n" + engine_and_hosted(fake_url) + f"""\
categories:
  code: ["Why does my Python script raise a TypeError?", "Write a SQL query joining two tables."]
  other: ["Hi, how are you?", "What is the capital of France?"]
teams: {{red: {{}}}}
rules:
  - name: code-to-hosted
    when: {{category: code}}
    route: [hosted]
  - name: floor
    strategy: quality_floor
    max_difficulty: {FLOOR}
    local: [local]
    spill: [hosted]
"""


@pytest.fixture(scope="module")
def gateway(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:  # noqa: F811
    with serving(tmp_path_factory.mktemp("quality"), _policy(fake.url)) as gw:
        yield gw


def test_easy_runs_local_hard_goes_hosted_code_goes_hosted(gateway: Gateway) -> None:
    scorer = load_scorer()
    assert scorer.score_text(EASY) < FLOOR < scorer.score_text(HARD)  # what the shipped model says
    easy = gateway.chat("chat", messages=[{"role": "user", "content": EASY}])
    assert (easy.status, easy.backend, easy.rule) == (200, "local", "floor"), easy
    hard = gateway.chat("chat", messages=[{"role": "user", "content": HARD}])
    assert (hard.status, hard.backend, hard.rule) == (200, "hosted", "floor"), hard
    code = gateway.chat("chat", messages=[{"role": "user", "content": CODE}])
    assert (code.status, code.backend, code.rule) == (200, "hosted", "code-to-hosted"), code

