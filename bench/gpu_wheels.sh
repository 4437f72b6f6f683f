#!/usr/bin/env bash
# Put the wheels the device machine lacks into .whl/ (ignored by git; the device call carries it):
# PyAV, at the version installed here, for the device's Python 3.12 on x86_64. About 36 MB of the
# 64 MiB a call may carry. Then: run(carry=[".whl"], command="OUT=$OUT bash bench/gpu_check.sh").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
AV=$("$PY" -c "import av; print(av.__version__)")
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "av==$AV"
ls -l .whl
