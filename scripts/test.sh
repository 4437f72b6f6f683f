#!/usr/bin/env bash
# Set up a fresh virtual environment and run the whole test suite (CPU only).
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k parity  # extra arguments go to pytest
#   bash scripts/test.sh -m "not slow"  # the quick loop: no render-heavy tests
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TALKER_VENV:-.venv}
TORCH_SPEC=${TALKER_TORCH:-torch==2.13.0}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --disable-pip-version-check "$TORCH_SPEC" 2>&1 | grep -v "is ignored: it is neither" || true
"$PY" -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt -r requirements-ray.txt 2>&1 | grep -v "is ignored: it is neither" || true
"$PY" -c "import torch, transformers, av, imageio_ffmpeg; print('torch', torch.__version__, '| transformers', transformers.__version__)"
# lint first (a few seconds; mypy keeps its cache in .mypy_cache): style, formatting, types
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"
exec "$PY" -m pytest -q -p no:cacheprovider "$@" tests
