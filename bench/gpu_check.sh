#!/usr/bin/env bash
# The first-GPU check (bench/gpu_check.py) with a python that has torch: $PYTHON if set, else the
# project's .venv (a GPU machine where `make setup` ran), else python3 (a GPU image's own torch).
# Results go to $OUT when set (the device tool brings that folder back), else bench/results/gpu/.
#   bash bench/gpu_check.sh                 # the whole check on the GPU, <= 8 minutes
#   bash bench/gpu_check.sh --stages env,tests
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONUNBUFFERED=1
exec "$PY" bench/gpu_check.py --device cuda "$@"
