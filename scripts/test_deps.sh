#!/usr/bin/env bash
# The second dependency set of CI: the oldest versions requirements.txt and requirements-dev.txt
# allow (every ">=" floor installed exactly), running the parity and generation tests with ONE
# intra-op thread (scripts/test.sh runs the whole suite on the newest versions, two threads).
#   bash scripts/test_deps.sh            # extra arguments go to pytest
# TALKER_OLDEST_VENV (default .venv-oldest) and TALKER_OLDEST_TORCH (default torch==2.13.0) override.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TALKER_OLDEST_VENV:-.venv-oldest}
TORCH_SPEC=${TALKER_OLDEST_TORCH:-torch==2.13.0}
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
FLOORS="$VENV/floors.txt"
sed -nE 's/^([A-Za-z0-9_.-]+)>=([^ ;#,]+).*/\1==\2/p' requirements.txt requirements-dev.txt > "$FLOORS"
pip_q() { "$PY" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
pip_q "$TORCH_SPEC"
pip_q --prefer-binary -c "$FLOORS" -r requirements.txt -r requirements-dev.txt
# every floor is what got installed (a resolver that silently went higher would test nothing old)
"$PY" - "$FLOORS" <<'PY'
import sys
from importlib.metadata import version

def norm(v):
    parts = [int(p) for p in v.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return parts

bad = []
for line in open(sys.argv[1]):
    name, want = line.strip().split("==")
    got = version(name)
    if norm(got) != norm(want):
        bad.append(f"{name} {got} (floor {want})")
import torch, transformers
print("oldest set:", ", ".join(l.strip() for l in open(sys.argv[1])), "| torch", torch.__version__)
if bad:
    sys.exit("not the floor versions: " + ", ".join(bad))
PY
echo "oldest-set install: $(( $(date +%s) - t0 )) s"
TALKER_TEST_THREADS=1 "$PY" -m pytest -q -p no:cacheprovider "$@" \
  tests/test_parity_*.py tests/test_golden_inventory.py tests/test_talker_model.py tests/test_dependency_drift.py \
  tests/test_tokenizer.py tests/test_released_files.py tests/test_check_models.py
echo "oldest-set step: $(( $(date +%s) - t0 )) s"
