#!/usr/bin/env bash
# Every device check of issues 16 and 17 in one call, each under its own timeout, logs and JSON
# under $OUT (the device tool brings that folder back). Dry run on the CPU:
#   OUT=/tmp/gpu bash bench/gpu_check.sh --device cpu --sizes debug
# On the device machine (torch with CUDA preinstalled; PyAV travels as a wheel in .whl/ if needed):
#   bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
SIZES=release
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
step() {  # step NAME SECONDS COMMAND...: run one check, keep its log and exit status
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$OUT/summary.txt"
}
: > "$OUT/summary.txt"
step env 30 bash -c "nvidia-smi || true; $PY -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__)'"
# fast path vs plain (the CUDA-graph test runs where CUDA is present) and the parity fixtures
step pytest 240 "$PY" -m pytest -q -p no:cacheprovider -m "not comfyui" tests/test_fast_path.py tests/test_parity_heads.py tests/test_parity_generate.py tests/test_parity_liax.py tests/test_parity_whisperx_vae.py
# generation loop: eager vs fast program vs CUDA graphs, bf16 vs fp32, CPU vs CUDA, profile of one patch
step profile 240 "$PY" -m bench.gpu_profile --device "$DEVICE" --size "${SIZES%%,*}" --json "$OUT/profile.json"
# heads per patch (baseline, plain, fast) in fp32 and bf16
step heads_fp32 180 "$PY" -m bench --device "$DEVICE" --sizes "$SIZES" --parts heads --dtype float32 --patches 8 --json "$OUT/heads_fp32.json"
step heads_bf16 180 "$PY" -m bench --device "$DEVICE" --sizes "$SIZES" --parts heads --dtype bfloat16 --patches 8 --json "$OUT/heads_bf16.json"
# rendering throughput (bf16), audio decode, end-to-end and streaming (time to first frame)
step render_bf16 240 "$PY" -m bench --device "$DEVICE" --sizes "$SIZES" --parts render,audio --dtype bfloat16 --frames 16 --json "$OUT/render_bf16.json"
step e2e_bf16 300 "$PY" -m bench --device "$DEVICE" --sizes "$SIZES" --parts e2e,stream --dtype bfloat16 --json "$OUT/e2e_bf16.json"
cat "$OUT/summary.txt"
