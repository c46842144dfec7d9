"""Suite-wide set-up: keep tiktoken and litellm offline before anything imports them; every
`hybridgw serve` a test starts runs one process unless the test asks for `--workers N`."""
import os

from policies.offline import configure_offline_env

configure_offline_env()
os.environ.setdefault("HYBRIDGW_WORKERS", "1")  # tests read one process's log and signal its pid
