#!/usr/bin/env bash
# Set up a fresh virtual environment and run the whole test suite (CPU only), in two parts:
#  1. the library, CLI and pack tests in .venv (torch 2.13 CPU);
#  2. the tests marked `comfyui` (the nodes, the example workflows, the end-to-end server test) in
#     the real ComfyUI 0.3.75 that scripts/get_comfyui.sh fetches outside the repository, with its
#     own venv (torch 2.14.1, the newest pip allows here); there a missing ComfyUI is a failure, not a
#     skip; the parity tests run once more in that venv, and scripts/test_deps.sh runs them on the
#     oldest versions the requirements allow (both in a full run only, not with extra arguments).
#     The browser test of that part drives Debian's headless Chromium: scripts/get_chromium.sh
#     installs it with apt-get when it is missing (root on Debian, as CI runs; else an error).
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k parity  # extra arguments go to pytest (both parts)
#   bash scripts/test.sh -m "not slow"  # the quick loop: no render-heavy tests
#   TALKER_SKIP_COMFYUI=1 bash scripts/test.sh   # part 1 only (no ComfyUI download)
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

# pytest's exit 5 is "no test selected" (e.g. -k matched only one part); both parts empty is a failure.
rc1=0
env -u COMFYUI_DIR "$PY" -m pytest -q -p no:cacheprovider -m "not comfyui" "$@" tests || rc1=$?
[ $rc1 -eq 0 ] || [ $rc1 -eq 5 ] || exit $rc1
if [ "${TALKER_SKIP_COMFYUI:-0}" = 1 ]; then
  exit $rc1
fi
t0=$(date +%s)
bash scripts/get_chromium.sh
eval "$(bash scripts/get_comfyui.sh)"
echo "ComfyUI host and browser ready in $(( $(date +%s) - t0 )) s: $COMFYUI_DIR"
rc2=0
TALKER_REQUIRE_COMFYUI=1 "$COMFYUI_PYTHON" -m pytest -q -p no:cacheprovider -m comfyui "$@" tests || rc2=$?
echo "ComfyUI part: $(( $(date +%s) - t0 )) s in all"
# the same venv holds the newest torch pip allows here (2.14.1): the parity fixtures hold there too
rc3=0
if [ "$#" -eq 0 ]; then
  env -u COMFYUI_DIR "$COMFYUI_PYTHON" -m pytest -q -p no:cacheprovider -m "not comfyui" \
    tests/test_parity_heads.py tests/test_parity_generate.py tests/test_parity_liax.py \
    tests/test_parity_speaker.py tests/test_parity_whisperx_vae.py tests/test_golden_inventory.py \
    tests/test_dependency_drift.py || rc3=$?
fi
[ $rc3 -eq 0 ] || exit $rc3
# the oldest versions the requirements allow, one thread (a full run only)
if [ "$#" -eq 0 ]; then
  bash scripts/test_deps.sh
fi
if [ $rc2 -eq 5 ] && [ $rc1 -eq 5 ]; then
  echo "no test selected" >&2
  exit 5
fi
[ $rc2 -eq 0 ] || [ $rc2 -eq 5 ] || exit $rc2
exit 0
