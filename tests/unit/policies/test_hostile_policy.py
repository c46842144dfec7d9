"""Hostile policy files: recursive anchors, alias bombs, deep nesting, control characters, huge files
and names that cannot go into a header are refused with a clear error; the reload watcher survives
them and applies the next valid edit."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from policies.errors import PolicyError
from policies.loader import MAX_POLICY_BYTES, LoadedPolicy, load_policy, load_policy_file
from policies.reload import PolicyReloader

from .support import GOOD_POLICY

# 303 bytes that expand to 9^9 strings: froze the gateway for 19 s when parsed on the event loop
LAUGHS = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")
)


def _refused(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(text, "p.yaml", {})
    return info.value.message


@pytest.mark.parametrize(("text", "error"), [
    ("a: &a [*a, *a]\n", "p.yaml:1: an anchor refers to itself"),
    ("a: &a {x: *a}\n", "p.yaml:1: an anchor refers to itself"),
    (LAUGHS, "values once aliases are expanded; refused"),
    ("a: &a 1\nb: [" + ", ".join(["*a"] * 1100) + "]\n", "p.yaml:2: more than 1024 aliases"),
    ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than 64 levels deep"),
    ("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 100)), "nested more than 64 levels deep"),
    (GOOD_POLICY.replace("rules:", "rules:\x07"),
     "p.yaml:6: not valid YAML: special characters are not allowed"),
    (GOOD_POLICY + "#" + "x" * MAX_POLICY_BYTES, "at most"),
])
def test_hostile_yaml_is_refused_quickly_with_a_clear_error(text: str, error: str) -> None:
    started = time.monotonic()
    assert error in _refused(text)
    assert time.monotonic() - started < 10  # generous: the point is "not minutes", not a speed target


def test_a_huge_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (4 * MAX_POLICY_BYTES))
    with pytest.raises(PolicyError, match="larger than"):
        load_policy_file(path, {})


@pytest.mark.parametrize(("old", "new", "error"), [
    ("name: first", "name: \"caf\u20ac\"", "rules[0].name: rule name 'caf€' cannot go into an HTTP header"),
    ("name: first", "name: \"a\\tb\"", "cannot go into an HTTP header"),
    ("  local: {kind", "  \"\u043b\u043e\u043a\": {kind: openai, base_url: 'http://x'}\n  local: {kind",
     "backend name 'лок' cannot go into an HTTP header"),
])
def test_names_that_cannot_go_into_a_header_are_refused(old: str, new: str, error: str) -> None:
    assert error in _refused(GOOD_POLICY.replace(old, new))


def test_latin1_names_still_load() -> None:
    loaded = load_policy(GOOD_POLICY.replace("name: first", "name: naïve-rule"), "p.yaml", {})
    assert loaded.policy.rules[0].name == "naïve-rule"


async def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def test_the_watcher_survives_hostile_files_and_applies_the_next_valid_edit(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD_POLICY)
    applied: list[LoadedPolicy] = []
    reloader = PolicyReloader(path, applied.append, interval_s=0.02, environ={})
    first_version = reloader.state().version

    async def scenario() -> None:
        await reloader.start()
        try:
            for text in (GOOD_POLICY.replace("rules:", "rules:\x01"), "a: &a [*a, *a]\n", LAUGHS):
                before = reloader.state().last_error_at
                path.write_text(text)
                await _until(lambda b=before: reloader.state().last_error_at != b, "the hostile file was read")
                assert reloader.state().last_error and "refused" in reloader.state().last_error
            assert applied == [] and reloader.state().version == first_version
            path.write_text(GOOD_POLICY.replace("name: first", "name: second"))
            await _until(lambda: applied, "the valid edit applied")
        finally:
            await reloader.stop()

    asyncio.run(scenario())
    state = reloader.state()
    assert applied[-1].policy.rules[0].name == "second"
    assert state.last_error is None and state.reloads == 1 and state.version not in (None, first_version)
    assert state.watcher.failures == 0


def test_an_error_in_the_watcher_itself_is_survived_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD_POLICY)
    applied: list[LoadedPolicy] = []
    reloader = PolicyReloader(path, applied.append, interval_s=0.02, max_backoff_s=0.05, environ={})
    reloader.path = Path(str(path) + "\x00")  # stat() raises ValueError: a bug-shaped failure, not a refusal

    async def scenario() -> None:
        await reloader.start()
        try:
            await _until(lambda: reloader.status.snapshot().failures >= 2, "the failures noticed")
            state = reloader.status.snapshot()
            assert state.state == "retrying" and "ValueError" in str(state.last_error)
            reloader.path = path
            path.write_text(GOOD_POLICY.replace("name: first", "name: back"))
            await _until(lambda: applied, "reloads resumed")
        finally:
            await reloader.stop()

    asyncio.run(scenario())
    assert applied[-1].policy.rules[0].name == "back"
    assert reloader.status.snapshot().state == "stopped" and reloader.status.snapshot().failures == 0


def test_policy_check_refuses_hostile_files_and_header_unsafe_names(tmp_path: Path) -> None:
    """`hybridgw policy check`, run as the user runs it: exit 1 with the reason, no traceback."""
    files = {"recursive.yaml": "a: &a [*a, *a]\n", "laughs.yaml": LAUGHS,
             "control.yaml": GOOD_POLICY.replace("rules:", "rules:\x1b"),
             "name.yaml": GOOD_POLICY.replace("name: first", "name: \"\u30eb\u30fc\u30eb\"")}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", *(str(tmp_path / n) for n in files)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "recursive.yaml:1: an anchor refers to itself" in run.stderr
    assert "laughs.yaml:" in run.stderr and "once aliases are expanded" in run.stderr
    assert "control.yaml:6: not valid YAML: special characters are not allowed" in run.stderr
    assert "name.yaml:7: rules[0].name: rule name 'ルール' cannot go into an HTTP header" in run.stderr


@pytest.mark.parametrize("limit", ["budget: {usd_per_day: 1e308}", "limits: {tokens_per_minute: 9223372036854775808}"])
def test_a_team_limit_past_what_the_limiter_counts_is_refused(limit: str) -> None:
    # 1e308 USD is infinity in nano-dollars: every request of the team was a 500
    assert "teams.red" in _refused(GOOD_POLICY + f"teams:\n  red: {{{limit}}}\n")
