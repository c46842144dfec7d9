#!/usr/bin/env bash
# Here (where pip reaches the registries): the wheels that `hybridgw serve` and the gateway benches
# (bench.workers_throughput, bench.issue15_bars --no-litellm, bench.idle_penalty) import and the device
# image lacks (/work/.library/device/KINDS.md), at the versions of the project's venv, cp312 manylinux x86_64,
# into .whl/; plus tiktoken's two encodings (cl100k_base, o200k_base) from litellm's bundled copies into
# .whl/tiktoken/ (the device cannot download them). scripts/device_cpu_bars.sh installs and uses them.
# Usage: scripts/fetch_device_wheels.sh   (env: VENV_PY=the venv's python, default .venv/bin/python;
#        PYVER=3.12; WHL_DIR=.whl — PYVER=3.11 WHL_DIR=/tmp/x dry-runs it for this box's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_PY=${VENV_PY:-.venv/bin/python}
PYVER=${PYVER:-3.12}
WHL_DIR=${WHL_DIR:-.whl}
# Found by importing (every process of the three benches, 2026-12-03) less KINDS.md's package list:
# the server (uvicorn[standard] + starlette), pydantic, orjson, OpenTelemetry with its OTLP exporter. Also two the
# image has, of versions unknown, that carried ones need recent: protobuf (googleapis-common-protos needs >=6.33.5)
# and typing-extensions (pydantic needs >=4.16.0).
NAMES="protobuf typing-extensions annotated-types googleapis-common-protos h2 hpack httptools hyperframe opentelemetry-api
opentelemetry-exporter-http-transport opentelemetry-exporter-otlp-common opentelemetry-exporter-otlp-proto-common
opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-prometheus opentelemetry-proto opentelemetry-sdk
opentelemetry-semantic-conventions orjson pydantic pydantic-core sniffio starlette typing-inspection uvicorn
watchfiles websockets"

# Pins: the venv's versions (the project has no lock file; its venv is what the suite and benches run on).
freeze=$("$VENV_PY" -m pip freeze 2>/dev/null)
pins=()
for name in $NAMES; do
  pattern="^$(echo "$name" | sed 's/[-_.]/[-_.]/g')=="
  line=$(echo "$freeze" | grep -i "$pattern" || true)
  [ -n "$line" ] || { echo "fetch_device_wheels: $name is not in $VENV_PY's pip freeze" >&2; exit 1; }
  pins+=("$line")
done

platforms=(--platform manylinux1_x86_64 --platform manylinux2014_x86_64)
for n in $(seq 17 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
mkdir -p "$WHL_DIR"
rm -f "$WHL_DIR"/*.whl  # one version of each: two stop the device's install
"$VENV_PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${platforms[@]}" -d "$WHL_DIR" "${pins[@]}"

# tiktoken's cache names a file by the sha1 of its URL; litellm bundles both files under those names.
mkdir -p "$WHL_DIR/tiktoken"
"$VENV_PY" - "$WHL_DIR/tiktoken" <<'EOF'
import hashlib, shutil, sys
from policies.offline import litellm_tokenizers_dir
folder = litellm_tokenizers_dir()
assert folder is not None, "litellm is not installed in this venv: its tiktoken files are the source"
for name in ("cl100k_base", "o200k_base"):
    key = hashlib.sha1(f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken".encode()).hexdigest()
    shutil.copyfile(folder / key, f"{sys.argv[1]}/{key}")
EOF

# Each wheel's own needs: carried, in the device image (KINDS.md), or named here — else say so.
"$VENV_PY" - "$WHL_DIR" "${KINDS:-/work/.library/device/KINDS.md}" <<'EOF'
import re, sys, zipfile
from pathlib import Path
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
kinds = Path(sys.argv[2])  # the device image's package list, where this workplace has it
listed = kinds.read_text().split("Packages: ", 1)[1].split("\n", 1)[0] if kinds.is_file() else ""
image = {norm(n.strip(" .")) for n in listed.split(",")}
wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
carried = {norm(w.name.split("-")[0]) for w in wheels}
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    for req in re.findall(r"^Requires-Dist: (.*)$", meta, re.M):
        name = norm(re.match(r"[A-Za-z0-9._-]+", req).group())
        if "extra ==" not in req and name not in carried and name not in image:
            print(f"fetch_device_wheels: {w.name} needs {req!r}: neither carried nor known in the image")
EOF
ls "$WHL_DIR"
du -ch "$WHL_DIR"/*.whl | tail -1 | sed 's/total/wheels in all/'
du -sh "$WHL_DIR" | sed 's/\t.*/ with the tiktoken files/'
