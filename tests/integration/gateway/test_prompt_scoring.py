"""Where the prompt models (difficulty, category) run for a policy that uses them: a large body
(> 32 KiB, counted in a worker thread) is scored in that worker thread too, never on the event
loop; a small one on the loop, as its counting; and a team over its budget, routed a second time,
is scored once. The real app under uvicorn in a thread, so the test sees which thread scored."""
from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.key_store import KeyStore
from gateway.settings import Settings
from gateway.token_count import OFF_LOOP_BYTES
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_inprocess import InProcessLimiter
from policies.quality.difficulty import prompt_text
from policies.quality.lazy import LazyQuality
from policies.router import PolicyRouter
from policies.schema import Policy
from tests.support.app_thread import ListSink, serving


class RecordingQuality(LazyQuality):
    """The shipped prompt models, noting each call: which model, for which prompt, on which thread."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, body: Mapping[str, Any]) -> float | None:
        self.calls.append(("difficulty", prompt_text(body)[:8], threading.get_ident()))
        return super().__call__(body)

    def category(self, body: Mapping[str, Any], categories: Mapping[str, Sequence[str]]) -> str | None:
        self.calls.append(("category", prompt_text(body)[:8], threading.get_ident()))
        return super().category(body, categories)

    def of(self, marker: str) -> list[tuple[str, int]]:
        return [(kind, thread) for kind, prompt, thread in self.calls if prompt == marker]


@dataclass
class Served:
    url: str
    keys: dict[str, str]
    quality: RecordingQuality
    loop_thread: int

    def chat(self, team: str, content: str) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions", headers={"authorization": f"Bearer {self.keys[team]}"},
                          json={"model": "m", "messages": [{"role": "user", "content": content}]}, timeout=60)


def _policy(fake: str) -> Policy:
    up = {"kind": "openai", "base_url": f"{fake}/v1", "price": {"input_usd_per_mtok": 100, "output_usd_per_mtok": 100}}
    return Policy.model_validate({
        "backends": {"up": up, "cheap": {**up, "price": {"input_usd_per_mtok": 0, "output_usd_per_mtok": 0}}},
        "models": {"m": {"deployments": [{"backend": "up", "model": "m"}, {"backend": "cheap", "model": "m"}]}},
        "categories": {"code": ["Why does my Python script raise a TypeError?"], "other": ["Hi, how are you?"]},
        "teams": {"free": {}, "broke": {"budget": {"usd_per_day": 0.000001, "on_exceed": "route"}}},
        "rules": [{"name": "over-budget", "when": {"over_budget": True}, "route": ["cheap"]},
                  {"name": "code", "when": {"category": "code"}, "route": ["up"]},
                  {"name": "hard", "when": {"difficulty": {"gt": 0.99}}, "route": ["up"]},
                  {"name": "rest", "route": ["up"]}]})


@pytest.fixture(scope="module")
def served(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("scoring")
    store = KeyStore.in_data_dir(root)
    keys = {team: store.create(team)[0] for team in ("free", "broke")}
    policy = _policy(fake_upstream)
    router = PolicyRouter(policy)
    router.decider.quality = quality = RecordingQuality()
    limiter = InProcessLimiter(LimitsConfig(teams={"broke": TeamLimits(usd_per_day=0.000001)}))
    app = create_app(Settings(data_dir=root), policy=policy, key_store=store, usage_sink=ListSink(),
                     limiter=limiter, router=router)
    try:
        with serving(app) as (url, thread):
            assert thread.ident is not None
            yield Served(url, keys, quality, thread.ident)
    finally:
        store.close()


def _large(marker: str) -> str:
    text = f"{marker} " + "please explain the following log lines carefully " * 1000
    assert len(text) > OFF_LOOP_BYTES
    return text


def test_a_large_prompt_is_scored_in_the_worker_thread_that_counts_it(served: Served) -> None:
    assert served.chat("free", _large("LARGE-01")).status_code == 200
    calls = served.quality.of("LARGE-01")
    assert sorted(kind for kind, _ in calls) == ["category", "difficulty"]
    assert all(thread != served.loop_thread for _, thread in calls), calls


def test_a_small_prompt_is_scored_on_the_loop_as_it_is_counted(served: Served) -> None:
    assert served.chat("free", "SMALL-01 what is two plus two?").status_code == 200
    calls = served.quality.of("SMALL-01")
    assert sorted(kind for kind, _ in calls) == ["category", "difficulty"]
    assert {thread for _, thread in calls} == {served.loop_thread}


@pytest.mark.parametrize("content", ["BROKE-01 what is two plus two?", _large("BROKE-02")])
def test_a_team_routed_again_over_its_budget_is_scored_once(served: Served, content: str) -> None:
    reply = served.chat("broke", content)
    assert reply.status_code == 200 and reply.headers["x-hybridgw-backend"] == "cheap"
    assert sorted(kind for kind, _ in served.quality.of(content[:8])) == ["category", "difficulty"]
