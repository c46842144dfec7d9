"""Every example policy replays: each strategy, time windows, engine pools, vLLM-state backends."""
from __future__ import annotations

from pathlib import Path

import pytest

import policies
from policies.compiled import compile_policy
from policies.replay.inputs import read_policy
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.summary import summarize
from policies.replay.traffic import TrafficRecord
from tests.unit.policies.replay.support import PERF

EXAMPLES = sorted((Path(policies.__file__).parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_policy_replays(path: Path) -> None:
    loaded = read_policy(path, [])
    assert not loaded.absent_backends  # requires_env backends are modelled, whatever the environment
    aliases = list(loaded.policy.models)
    teams = [*loaded.policy.teams, "someone"]
    traffic = [TrafficRecord(1_795_521_600.0 + 7 * i, teams[i % len(teams)], aliases[i % len(aliases)],
                             50 + (i * 97) % 5000, 5 + (i * 31) % 300,
                             headers={"x-priority": "high"} if i % 3 == 0 else {}) for i in range(120)]
    out = replay(loaded, traffic, ReplaySetup(PERF, {}))
    summary = summarize(path.name, compile_policy(loaded.policy, {}), traffic, out, PERF, 1.0)
    assert sum(summary.served_by.values()) + sum(summary.refused.values()) == 120
    assert sum(summary.served_by.values()) > 0
