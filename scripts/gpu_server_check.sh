#!/usr/bin/env bash
# On a GPU host: `hybridgw engine` (process core) on CUDA with SmolLM2 at 64 and 256 sequences, each
# measured by bench/engine_server.py --url (3 rounds of C streams x 64 tokens). Runs from the source
# tree with python3 (torch with CUDA, plus the project's server dependencies on PYTHONPATH).
# Usage: scripts/gpu_server_check.sh SMOLLM2_GGUF
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
G=${1:?usage: scripts/gpu_server_check.sh SMOLLM2_GGUF}
MODEL=$(basename "$G" .gguf)
for seqs in 64 256; do
  port=$((8100 + seqs))
  python3 -m gateway.cli engine --model $G --port $port --max-num-seqs $seqs --max-num-batched-tokens 8192 \
      --gpu-memory-fraction 0.3 > "${TMPDIR:-/tmp}/engine_$seqs.log" 2>&1 &
  pid=$!
  for i in $(seq 1 120); do grep -q ready "${TMPDIR:-/tmp}/engine_$seqs.log" && break; sleep 0.5; done
  cat "${TMPDIR:-/tmp}/engine_$seqs.log"
  curl -s localhost:$port/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"'"$MODEL"'","messages":[{"role":"user","content":"What is the capital of France?"}],"temperature":0,"max_tokens":20}'; echo
  python3 bench/engine_server.py --url http://127.0.0.1:$port --concurrency $seqs --rounds 3 --no-peer 2>&1 | grep -v engine_state
  curl -s localhost:$port/v1/engine/state; echo
  kill $pid; wait $pid
done
nvidia-smi --query-gpu=name --format=csv,noheader
