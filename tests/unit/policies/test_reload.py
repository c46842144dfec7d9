"""Hot reload: a changed file is applied, a broken one refused (old policy stays), SIGHUP forces."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from policies.loader import LoadedPolicy
from policies.reload import PolicyReloader

from .support import GOOD_POLICY


def _reloader(tmp_path: Path) -> tuple[PolicyReloader, list[LoadedPolicy], Path]:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD_POLICY)
    applied: list[LoadedPolicy] = []
    return PolicyReloader(path, applied.append, interval_s=0.05, environ={}), applied, path


def test_change_broken_file_and_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reloader, applied, path = _reloader(tmp_path)
    assert not reloader.check()  # unchanged
    path.write_text(GOOD_POLICY.replace("name: first", "name: second"))
    assert reloader.check()
    assert applied[-1].policy.rules[0].name == "second"
    with caplog.at_level(logging.ERROR, logger="hybridgw.policy.reload"):
        path.write_text(GOOD_POLICY.replace("route:", "rout:"))
        assert not reloader.check()
        assert not reloader.check()  # reported once, not on every tick
    assert len(applied) == 1  # the running policy stays
    assert reloader.last_error is not None and f"{path}:7: rules[0].rout: unknown field" in reloader.last_error
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    path.write_text(GOOD_POLICY.replace("name: first", "name: third"))
    assert reloader.check() and applied[-1].policy.rules[0].name == "third" and reloader.last_error is None


def test_deleted_file_keeps_the_policy(tmp_path: Path) -> None:
    reloader, applied, path = _reloader(tmp_path)
    path.unlink()
    assert not reloader.check() and applied == [] and "gone" in (reloader.last_error or "")


def test_watcher_and_sighup(tmp_path: Path) -> None:
    reloader, applied, path = _reloader(tmp_path)

    async def scenario() -> None:
        await reloader.start()
        try:
            path.write_text(GOOD_POLICY.replace("name: first", "name: watched"))
            for _ in range(200):
                if applied:
                    break
                await asyncio.sleep(0.01)
            assert applied[-1].policy.rules[0].name == "watched"
            os.kill(os.getpid(), signal.SIGHUP)  # same content: only SIGHUP reloads it
            for _ in range(200):
                if len(applied) == 2:
                    break
                await asyncio.sleep(0.01)
            assert len(applied) == 2
        finally:
            await reloader.stop()

    asyncio.run(scenario())
