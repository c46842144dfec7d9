"""The native library builds from a fresh checkout's source into an empty cache folder and loads."""
from __future__ import annotations

from pathlib import Path

import pytest

from local_engine.native.build import build, library_path
from local_engine.native.kernels import load_kernels

from .native_support import native_kernels


def test_a_fresh_build_lands_in_the_cache_folder_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    native_kernels()  # skips where no library can be built (no x86-64 or no compiler)
    monkeypatch.setenv("HYBRIDGW_NATIVE_DIR", str(tmp_path / "native"))
    target = library_path()
    assert not target.exists()
    assert build() == target and target.parent == tmp_path / "native"
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left behind
    assert load_kernels() is not None


def test_the_switch_turns_the_kernels_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDGW_NATIVE", "off")
    assert load_kernels() is None
