"""Small steps may run on fewer CPU threads than large ones (--small-step-threads), same outputs."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from local_engine.cli import config_from_args, parse_args
from local_engine.config import ConfigError, EngineConfig
from local_engine.engine_build import load
from local_engine.loading import load_engine_model
from local_engine.runner_threads import StepThreads, small_step_threads
from local_engine.sequence import Sequence
from tests.unit.local_engine.helpers import BlockPool, greedy, make_runner, step, tiny_model


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_by_step_size() -> None:
    policy = StepThreads(full=2, small=1, max_small_tokens=16)
    assert [policy.threads_for(n) for n in (1, 16, 17, 512)] == [1, 1, 2, 2]
    with pytest.raises(ValueError):
        StepThreads(full=2, small=0)


def _generate(runner, prompts: list[list[int]], seen: list[int]) -> list[list[int]]:
    pool, seqs = BlockPool(64), [Sequence(p, greedy()) for p in prompts]
    step(runner, pool, seqs, [s.num_tokens for s in seqs], is_prefill=True)
    seen.append(torch.get_num_threads())
    for _ in range(4):
        step(runner, pool, seqs, [1] * len(seqs), is_prefill=False)
        seen.append(torch.get_num_threads())
    return [s.completion_token_ids for s in seqs]


def test_runner_switches_threads_by_step_and_keeps_outputs() -> None:
    model = tiny_model()
    prompts = [list(range(3, 12)), list(range(20, 27))]  # a 16-token prefill, then 2-token decodes
    plain_seen: list[int] = []
    torch.set_num_threads(2)
    plain = _generate(make_runner(model), prompts, plain_seen)
    switching = make_runner(model)
    switching.step_threads = StepThreads(full=2, small=1, max_small_tokens=4)
    seen: list[int] = []
    assert _generate(switching, prompts, seen) == plain
    assert plain_seen == [2] * 5
    assert seen == [2, 1, 1, 1, 1]  # the prefill on both threads, each decode step on one


def test_loader_sets_step_threads_on_cpu_unless_deterministic() -> None:
    assert load_engine_model("tiny-random", num_threads=2, small_step_threads=1).runner.step_threads == \
        StepThreads(full=2, small=1)
    assert load_engine_model("tiny-random", num_threads=2).runner.step_threads is None
    assert load_engine_model("tiny-random", num_threads=2, small_step_threads=2).runner.step_threads is None
    assert load_engine_model("tiny-random", num_threads=2, small_step_threads=1,
                             deterministic=True).runner.step_threads is None


def test_cli_small_step_threads() -> None:
    assert config_from_args(parse_args([])).small_step_threads is None  # the machine's default
    assert config_from_args(parse_args(["--small-step-threads", "0"])).small_step_threads == 0
    assert config_from_args(parse_args(["--small-step-threads", "2"])).small_step_threads == 2
    with pytest.raises(ConfigError):
        config_from_args(parse_args(["--small-step-threads", "-1"]))


def test_default_switches_only_on_small_machines() -> None:
    assert small_step_threads(None, cpus=2) == 1
    assert small_step_threads(None, cpus=4) == 1
    assert small_step_threads(None, cpus=16) is None  # unmeasured there: every step on all threads
    assert small_step_threads(0, cpus=2) is None
    assert small_step_threads(3, cpus=16) == 3


def test_engine_config_reaches_the_runner() -> None:
    def config(small: int) -> EngineConfig:
        return EngineConfig(model="tiny-random", cpu_threads=2, small_step_threads=small)

    on, off = load(config(1), shares_process_with_server=False), load(config(0), shares_process_with_server=False)
    assert on.runner.step_threads == StepThreads(full=2, small=1)
    assert off.runner.step_threads is None
