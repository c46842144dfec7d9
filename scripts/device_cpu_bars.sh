#!/usr/bin/env bash
# On the device machine (16 cores): issue #15's CPU bars that a 2-core box cannot show, in ~3-4 minutes, each
# bench under bench/cpu_partition.py (gateway processes, the fake upstream and the bench's client each on their
# own CPUs; default 8:4:4): bench.workers_throughput (1 vs 2 vs 4 workers), bench.issue15_bars --no-litellm, its
# 512 streams alone over STREAM_WORKERS workers, and bench.idle_penalty. No Redis. Prints everything; copies the logs under $OUT when set.
# Before it, with the wheels of scripts/fetch_device_wheels.sh carried in .whl:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site:. && scripts/device_cpu_bars.sh
# Knobs (env): PY (python3), SECONDS_EACH (4: each throughput run), WT_ROUNDS (3), WT_WORKERS (1,2,4),
# WT_CONCURRENCY (128: 20 ms upstream, so at most 6,400 req/s), BARS_ROUNDS (2), LATENCY_REQUESTS (200),
# STREAM_WORKERS (6: the streams-only run's --workers), IDLE_ROUNDS (2), IDLE_REQUESTS (400), IDLE_CALLS (300),
# RUN_TIMEOUT_S (150 per bench), WHL_DIR (.whl), CPUS_GATEWAY /
# CPUS_UPSTREAM / CPUS_CLIENT (CPU lists, e.g. 0-7; default bench/cpu_partition.py's split).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
case ":${PYTHONPATH:-}:" in *":$PWD:"* | *":.:"*) ;; *) export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" ;; esac
export WHL_DIR=${WHL_DIR:-$PWD/.whl}
export REDIS_URL="" PYTHONUNBUFFERED=1 TIKTOKEN_CACHE_DIR=${TIKTOKEN_CACHE_DIR:-$WHL_DIR/tiktoken}
LOGS=${OUT:-${TMPDIR:-/tmp}/device_cpu_bars}
mkdir -p "$LOGS"
echo "device_cpu_bars: $(date -u +%FT%TZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- |
  sed 's/^ //')), $($PY -V), load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# Fail early and loudly: every import the three benches' processes make, tiktoken's files offline, and each
# carried package's needs met by what is installed (a version the image has may be too old).
timeout 120 "$PY" - <<'EOF' || { echo "device_cpu_bars: FAILED before any bench: a package is missing (above)"; exit 2; }
import importlib.metadata as md, os, sys
from pathlib import Path
import gateway.cli, bench.cpu_partition, bench.idle_penalty, bench.issue15_bars, bench.workers_throughput  # noqa
import h2, httptools, orjson, pydantic, starlette, tiktoken, uvicorn, uvloop, watchfiles, websockets, yaml  # noqa
import opentelemetry.exporter.otlp.proto.http.trace_exporter, opentelemetry.exporter.prometheus  # noqa
import opentelemetry.sdk.trace, google.rpc.status_pb2, tests.fakes.openai_upstream  # noqa
from packaging.requirements import Requirement
for name in ("cl100k_base", "o200k_base"):
    tiktoken.get_encoding(name)
bad = []
for wheel in sorted(Path(os.environ["WHL_DIR"]).glob("*.whl")):  # the carried ones, as installed
    dist = md.distribution(wheel.name.split("-")[0])
    for text in dist.requires or ():
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            bad.append(f"{dist.metadata['Name']} needs {text}, found {have}")
versions = {n: md.version(n) for n in ("uvicorn", "starlette", "pydantic", "anyio", "h11", "httpx", "uvloop",
                                       "protobuf", "typing_extensions", "tiktoken")}
print("device_cpu_bars: imports ok;", ", ".join(f"{n} {v}" for n, v in versions.items()))
if bad:
    sys.exit("device_cpu_bars: unmet: " + "; ".join(bad))
EOF

partition=()
for role in gateway upstream client; do
  var=CPUS_${role^^}
  [ -n "${!var:-}" ] && partition+=(--"$role" "${!var}")
done
failed=0
bench() {  # bench NAME MODULE ARGS...: one bench under the CPU partition, its log to $LOGS/NAME.log
  local name=$1 started=$SECONDS; shift
  echo; echo "=== $name: $PY -m bench.cpu_partition ${partition[*]} -- $PY -m $* (load average $(cut -d' ' -f1 /proc/loadavg))"
  timeout -k 10 "${RUN_TIMEOUT_S:-150}" "$PY" -m bench.cpu_partition "${partition[@]}" -- "$PY" -m "$@" 2>&1 |
    tee "$LOGS/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - started)) s"
  [ "$rc" = 0 ] || failed=1
}
s=${SECONDS_EACH:-4}
bench workers bench.workers_throughput --seconds "$s" --rounds "${WT_ROUNDS:-3}" --workers "${WT_WORKERS:-1,2,4}" \
  --concurrency "${WT_CONCURRENCY:-128}"
bench bars bench.issue15_bars --no-litellm --rounds "${BARS_ROUNDS:-2}" --seconds "$s" \
  --latency-requests "${LATENCY_REQUESTS:-200}"
# the 512 in-phase streams spread over worker processes: the burst per process shrinks (docs "512 streams in phase")
bench streams bench.issue15_bars --no-litellm --streams-only --rounds "${BARS_ROUNDS:-2}" \
  --workers "${STREAM_WORKERS:-6}"
bench idle bench.idle_penalty --rounds "${IDLE_ROUNDS:-2}" --requests "${IDLE_REQUESTS:-400}" \
  --calls "${IDLE_CALLS:-300}"
echo; echo "device_cpu_bars: done in ${SECONDS} s, load average $(cut -d' ' -f1-3 /proc/loadavg)$([ $failed = 0 ] ||
  echo ', a bench FAILED (above)')"
exit $failed
