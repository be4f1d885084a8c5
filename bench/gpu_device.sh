#!/usr/bin/env bash
# bench/gpu.py on a lent GPU machine, from the wheels bench/gpu_kit.py gathered (run it here first and
# name .gpu_kit in the run tool's carry). LF and LlamaFactory each get their own folder of packages,
# ahead of the image's, so neither sees the other's transformers.
#   bash bench/gpu_device.sh [bench/gpu.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .gpu_kit/lf ] || { echo "no .gpu_kit here: run 'uv run python bench/gpu_kit.py' first and carry .gpu_kit" >&2; exit 2; }
PY=${PYTHON:-python3}
install() { "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" "$1"/*.whl; }
install .gpu_kit/lf /tmp/lf-site
install .gpu_kit/llamafactory /tmp/llamafactory-site
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DISABLE_VERSION_CHECK=1
PYTHONPATH=/tmp/lf-site "$PY" bench/gpu.py --data .gpu_kit/data --tokenizer .gpu_kit/tokenizer \
  --llamafactory-site /tmp/llamafactory-site "$@"
