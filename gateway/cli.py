"""The `hybridgw` command: dispatches each subcommand to the package that owns it."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from policies.offline import configure_offline_env

USAGE = """usage: hybridgw COMMAND [ARGS]

commands:
  serve    run the gateway (spawns the local engine on the default policy)
  engine   run the local decode engine as an OpenAI-compatible server
  keys     create / update / rotate / list / info / revoke API keys
  policy   check or explain a policy file
  report   usage report per team, or chargeback per team / key / tag (--by)
  bench    load-test an OpenAI-compatible URL (TTFT, ITL, TPOT, E2E, goodput)
  router   evaluate the difficulty router on labelled prompts (router eval DATA.csv)
  replay   what-if: replay recorded traffic against policies (cost, latency, SLO)
  size     size engines from recorded traffic's ISL/OSL histogram
  shadow   export shadow traffic's pairs of answers (shadow export --team T --out FILE)
"""


# The one place a subcommand is registered: name → "module:function", imported on demand so each
# subcommand pulls in only what it needs (torch, litellm, ...).
COMMANDS: dict[str, str] = {
    "serve": "gateway.serve_cli:main",
    "engine": "local_engine.cli:main",
    "keys": "gateway.keys_cli:main",
    "policy": "policies.cli:main",
    "report": "gateway.report_prices:main",  # observability's report, priced from the policy
    "bench": "observability.bench.cli:main",
    "router": "policies.quality.eval_cli:main",
    "replay": "policies.replay.cli:main",
    "size": "policies.replay.size_cli:main",
    "shadow": "gateway.shadow_cli:main",
}


def _load(name: str) -> Callable[[list[str]], int]:
    module, function = COMMANDS[name].split(":")
    main: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
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
