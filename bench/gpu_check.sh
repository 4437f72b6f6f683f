#!/usr/bin/env bash
# Every device check of issues 16 and 17 in one call, each under its own timeout, logs and JSON
# under $OUT (the device tool brings that folder back). Dry run on the CPU:
#   OUT=/tmp/gpu bash bench/gpu_check.sh --device cpu --sizes debug
# On the device machine (torch with CUDA preinstalled, no PyAV: `bash bench/gpu_wheels.sh` here puts
# its wheel in .whl/, the device call carries .whl and this script installs it under /tmp/site):
#   bash bench/gpu_check.sh
# The checks together stay inside one device command (at most 600 s; BUDGET, default 540 s): a
# check starts only while the budget lasts, so a rerun of a few checks fits the session's time.
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
BUDGET=${BUDGET:-540}
ONLY=${ONLY:-}  # e.g. ONLY="pytest profile": run only these checks (a rerun)
export PYTHONUNBUFFERED=1
START=$(date +%s)
step() {  # step NAME SECONDS COMMAND...: run one check, keep its log and exit status
  local name=$1 limit=$2; shift 2
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt 20 ]; then
    echo "$name not run: the budget of ${BUDGET}s is spent" | tee -a "$OUT/summary.txt"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s (limit ${limit}s)" | tee -a "$OUT/summary.txt"
}
: > "$OUT/summary.txt"
if ! "$PY" -c "import av" 2>/dev/null; then
  if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  "$PY" -c "import av" 2>/dev/null || echo "PyAV missing: the media checks will fail (bash bench/gpu_wheels.sh, carry .whl)" | tee -a "$OUT/summary.txt"
fi
step env 30 bash -c "nvidia-smi || true; $PY -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__)'"
# fast path vs plain (the CUDA-graph test runs where CUDA is present) and the parity fixtures
# (TALKER_TEST_DEVICE: the fixtures' models and tensors on that device, float32, TF32 off)
step pytest 150 env TALKER_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -p no:cacheprovider -m "not comfyui" tests/test_fast_path.py \
  tests/test_parity_heads.py tests/test_parity_generate.py tests/test_parity_liax.py tests/test_parity_whisperx_vae.py \
  tests/test_parity_speaker.py
# generation loop: eager vs fast program vs CUDA graphs, bf16 vs fp32, CPU vs CUDA, profile of one patch
step profile 90 "$PY" -m bench.gpu_profile --device "$DEVICE" --size "${SIZES%%,*}" --json "$OUT/profile.json"
# heads per patch (baseline, plain, fast) in fp32 and bf16
step heads_fp32 45 "$PY" -m bench --device "$DEVICE" --sizes "$SIZES" --parts heads --dtype float32 --patches 8 --json "$OUT/heads_fp32.json"
step heads_bf16 45 "$PY" -m bench --device "$DEVICE" --sizes "$SIZES" --parts heads --dtype bfloat16 --patches 8 --json "$OUT/heads_bf16.json"
# rendering throughput (bf16), audio decode, end-to-end and streaming (time to first frame)
step render_bf16 75 "$PY" -m bench --device "$DEVICE" --sizes "$SIZES" --parts render,audio --dtype bfloat16 --frames 16 --json "$OUT/render_bf16.json"
step e2e_bf16 90 "$PY" -m bench --device "$DEVICE" --sizes "$SIZES" --parts e2e,stream --dtype bfloat16 --json "$OUT/e2e_bf16.json"
# long clips at release sizes with the real LIA-X: peak memory and wall time, sequential and overlapped
step long_bf16 90 "$PY" -m bench --device "$DEVICE" --sizes "$SIZES" --parts long --dtype bfloat16 --long-lengths 20,60 \
  --long-modes sequential,overlap --json "$OUT/long_bf16.json"
cat "$OUT/summary.txt"
