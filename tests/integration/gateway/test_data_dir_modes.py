"""The data directory (key hashes, usage ledger) is owner-only: the directory 0700, its files 0600,
once `hybridgw serve` runs (even over files made earlier under umask 022) and when `keys create` makes it."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.integration.gateway.conftest import Gateway, create_key


def test_the_data_dir_and_its_files_are_owner_only(gateway: Gateway) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    assert umask & 0o077 != 0o077, "`keys create` ran under an owner-only umask: nothing to tighten"
    assert stat.S_IMODE(gateway.data_dir.stat().st_mode) == 0o700
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in gateway.data_dir.iterdir() if p.is_file()}
    assert {"keys.sqlite3", "usage.sqlite3"} <= set(files), files
    assert {name: mode for name, mode in files.items() if mode & 0o077} == {}
    assert files["keys.sqlite3"] == 0o600 and files["usage.sqlite3"] == 0o600


def test_keys_create_alone_makes_an_owner_only_key_file(tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text("backends: {up: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
                      "models: {m: {deployments: [{backend: up, model: m}]}}\nteams: {red: {}}\n")
    data_dir = tmp_path / "fresh"
    assert create_key(data_dir, "red", config).startswith("sk-hgw-")
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_dir.iterdir() if p.is_file()}
    assert "keys.sqlite3" in modes and all(mode & 0o077 == 0 for mode in modes.values()), modes
