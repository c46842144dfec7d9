"""The `hybridgw` command: dispatches each subcommand to the package that owns it."""
from __future__ import annotations

import sys
from collections.abc import Callable

from policies.offline import configure_offline_env

USAGE = """usage: hybridgw COMMAND [ARGS]

commands:
  serve    run the gateway (spawns the local engine on the default policy)
  engine   run the local decode engine as an OpenAI-compatible server
  keys     create / list / revoke API keys
  policy   check or explain a policy file
  report   per-team usage report
  replay   what-if: replay recorded traffic against policies (cost, latency, SLO)
  size     size engines from recorded traffic's ISL/OSL histogram
"""


def _load(name: str) -> Callable[[list[str]], int]:
    # Imported on demand: each subcommand pulls in only what it needs (torch, litellm, ...).
    if name == "serve":
        from gateway.serve_cli import main
    elif name == "keys":
        from gateway.keys_cli import main
    elif name == "engine":
        from local_engine.cli import main
    elif name == "policy":
        from policies.cli import main
    elif name == "report":
        from gateway.report_prices import main  # observability's report, priced from the policy
    elif name == "replay":
        from policies.replay.cli import main
    elif name == "size":
        from policies.replay.size_cli import main
    else:
        raise KeyError(name)
    return main


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    configure_offline_env()
    try:
        command = _load(args[0])
    except KeyError:
        print(f"hybridgw: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return command(args[1:])


if __name__ == "__main__":
    sys.exit(main())
