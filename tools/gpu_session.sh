#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one call (docs/GPU.md, "Running the GPU
# check"): build the CUDA extension once (JIT, as bench/gpu_check.py does), run the op tests on
# CUDA tensors against that build, then the measurements. Results go to OUT (default
# gpu_session_out): pytest.txt, gpu_check.{md,json}, gpu_check.log.
#
#   bash tools/gpu_session.sh [OUT] [extra bench/gpu_check.py arguments, e.g. --quick]
#
# Exits non-zero when the tests or the check fail; the outputs written so far stay in OUT.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-gpu_session_out}"
shift $(( $# > 0 ? 1 : 0 ))
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-/tmp/slifmr_torch_extensions}"
export MAX_JOBS="${MAX_JOBS:-16}" PYTHONUNBUFFERED=1
cd "$ROOT"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_session: no CUDA device here; nothing to do" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"

# 1. The measurements build the extension (JIT) when it is neither installed nor given.
"$PY" bench/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
check=${PIPESTATUS[0]}

# 2. The op tests on CUDA tensors, every GPU backend, against the JIT build.
SO="$TORCH_EXTENSIONS_DIR/slifmr_cuda_jit/slifmr_cuda_jit.so"
if [[ -z "${SLIFMR_CUDA_LIB:-}" && -f "$SO" ]]; then export SLIFMR_CUDA_LIB="$SO"; fi
"$PY" -m pytest -q -p no:cacheprovider tests/propagate/test_op.py tests/topk/test_op.py \
  tests/topk/test_rerank.py tests/fuse/test_op.py tests/test_backends.py -k "cuda or rerank or backends" \
  2>&1 | tee "$OUT/pytest.txt" | tail -5
tests=${PIPESTATUS[0]}

echo "gpu_session: gpu_check exit $check, tests exit $tests; outputs in $OUT"
[[ $check == 0 && $tests == 0 ]]
