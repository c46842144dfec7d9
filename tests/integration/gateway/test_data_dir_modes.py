"""The data directory (key hashes, usage ledger) is owner-only once `hybridgw serve` runs: the
directory 0700, its files 0600, although `hybridgw keys create` made them first under umask 022."""
from __future__ import annotations

import os
import stat

from tests.integration.gateway.conftest import Gateway


def test_the_data_dir_and_its_files_are_owner_only(gateway: Gateway) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    assert umask & 0o077 != 0o077, "`keys create` ran under an owner-only umask: nothing to tighten"
    assert stat.S_IMODE(gateway.data_dir.stat().st_mode) == 0o700
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in gateway.data_dir.iterdir() if p.is_file()}
    assert {"keys.sqlite3", "usage.sqlite3"} <= set(files), files
    assert {name: mode for name, mode in files.items() if mode & 0o077} == {}
    assert files["keys.sqlite3"] == 0o600 and files["usage.sqlite3"] == 0o600
