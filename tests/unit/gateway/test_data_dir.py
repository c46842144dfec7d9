"""secure_data_dir tightens an existing data dir and what is directly in it, never following links."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.data_dir import secure_data_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_an_existing_loose_dir_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True, mode=0o755)
    os.chmod(data, 0o755)
    (data / "keys.sqlite3").write_text("k")
    os.chmod(data / "keys.sqlite3", 0o644)
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    os.chmod(outside, 0o644)
    (data / "link").symlink_to(outside)
    secure_data_dir(data)
    assert (_mode(data), _mode(data / "keys.sqlite3"), _mode(data / "logs")) == (0o700, 0o600, 0o700)
    assert _mode(outside) == 0o644


def test_a_new_dir_is_made_owner_only(tmp_path: Path) -> None:
    made = secure_data_dir(tmp_path / "a" / "b")
    assert _mode(made) == 0o700
