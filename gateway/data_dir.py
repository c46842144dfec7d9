"""The data directory holds API-key hashes, the usage ledger and spill files: owner-only, the
directory 0700 and the files in it 0600, also when an earlier command made them with a looser umask."""
from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077  # what `hybridgw serve` creates from then on (ledger, WAL files, spill, logs)


def secure_data_dir(path: Path) -> Path:
    """Create `path` 0700 (or tighten it) and drop group/other bits from what is directly in it.
    One level is enough: nobody else can enter a 0700 directory to reach deeper files."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    for entry in path.iterdir():
        info = entry.lstat()
        if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):  # never follow a link out
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                os.chmod(entry, mode & 0o700)
    return path
