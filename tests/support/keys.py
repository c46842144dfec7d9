"""API keys for integration tests, made by `hybridgw keys create`'s own code (gateway/keys_cli.py) in
the test's process: the same checks and stores as the command, without a new interpreter for each key
(about a second apiece, many seconds on a loaded machine). Tests of the command itself still run it."""
from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path


def create_key(data_dir: str | Path, team: str, config: str | Path | None = None, redis_url: str = "") -> str:
    """A key for `team`, which `config` (else the embedded default policy) must name: in Redis when
    `redis_url` is given (where a gateway with that REDIS_URL looks for keys), else in `data_dir`."""
    from gateway.keys_cli import main  # the gateway's modules load when a test makes its first key

    where = ["--config", str(config)] if config is not None else []
    out, err = io.StringIO(), io.StringIO()
    umask = os.umask(0o022)  # the command narrows the umask for its files; the tests' own stay as they were
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["--data-dir", str(data_dir), "--redis-url", redis_url, *where,
                         "create", "--team", team])
    finally:
        os.umask(umask)
    assert code == 0, f"hybridgw keys create --team {team} failed ({code}): {err.getvalue()}"
    return out.getvalue().strip()
