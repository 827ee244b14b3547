#!/usr/bin/env bash
# Compile check of the CUDA C++ sources in csrc/ on a machine without a GPU.
#
#   bash tools/check_csrc.sh          # every .cu with nvcc for sm_90 and sm_80; every .cpp
#                                     # syntax-checked with g++ -std=c++20 against torch headers
#   bash tools/check_csrc.sh --link   # also compile the .cpp files, link slifmr_kernels._C
#                                     # against libtorch + libcudart and load it in Python:
#                                     # proves the extern "C" launchers resolve and that every
#                                     # op schema registers with the dispatcher
#   bash tools/check_csrc.sh --link --keep DIR   # and leave the library at DIR/_C.so
#
# Exits non-zero on any failure. Without nvcc it prints SKIP and exits 0 (set
# SLIFMR_REQUIRE_NVCC=1 to make that a failure). Compiles run one at a time: the machine is
# shared; a full run takes one to three minutes on two cores.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LINK=0
KEEP=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --link) LINK=1 ;;
    --keep) KEEP="${2:?--keep needs a directory}"; shift ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "check_csrc: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

NVCC="${NVCC:-$(command -v nvcc || true)}"
if [[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [[ -z "$NVCC" ]]; then
  echo "check_csrc: SKIP (nvcc not found)"
  [[ "${SLIFMR_REQUIRE_NVCC:-0}" == "1" ]] && exit 1
  exit 0
fi
PY="${PYTHON:-python}"
CXX="${CXX:-g++}"

mapfile -t CU < <(cd "$ROOT" && find csrc -name '*.cu' | sort)
mapfile -t CPP < <(cd "$ROOT" && find csrc -name '*.cpp' | sort)
if [[ ${#CU[@]} -eq 0 || ${#CPP[@]} -eq 0 ]]; then
  echo "check_csrc: FAIL (no .cu or no .cpp sources under csrc/)" >&2
  exit 1
fi

INC=$("$PY" - <<'PY'
import sysconfig
import torch.utils.cpp_extension as c
print(" ".join("-I" + p for p in c.include_paths() + [sysconfig.get_paths()["include"]]))
PY
) || { echo "check_csrc: FAIL (cannot import torch for its include paths)" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
FAIL=0
step() {  # step LABEL CMD...: run, report, remember failures
  local label="$1"; shift
  local t0=$SECONDS
  if "$@" >"$TMP/log" 2>&1; then
    echo "ok    $label ($((SECONDS - t0)) s)"
  else
    echo "FAIL  $label"
    sed 's/^/      /' "$TMP/log" | tail -40
    echo
    FAIL=1
  fi
}

NVFLAGS=(-std=c++17 -O3 -Xcompiler -fPIC -Werror all-warnings
         -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_80,code=sm_80)
for f in "${CU[@]}"; do
  step "nvcc sm_90+sm_80  $f" "$NVCC" "${NVFLAGS[@]}" -c "$ROOT/$f" \
       -o "$TMP/$(echo "$f" | tr '/' '_').o"
done

for f in "${CPP[@]}"; do
  if [[ $LINK == 1 ]]; then
    # a full compile is a superset of the syntax check
    step "g++ -std=c++20 -c  $f" "$CXX" -std=c++20 -O1 -fPIC -Wall $INC -c "$ROOT/$f" \
         -o "$TMP/$(echo "$f" | tr '/' '_').o"
  else
    step "g++ -std=c++20 -fsyntax-only  $f" "$CXX" -std=c++20 -fsyntax-only -Wall $INC "$ROOT/$f"
  fi
done

if [[ $LINK == 1 && $FAIL == 0 ]]; then
  TL=$("$PY" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
  CUDA_LIB=""
  for c in "${CUDA_HOME:-/nonexistent}/lib64" "$(dirname "$(dirname "$NVCC")")/lib64" \
           /usr/local/cuda/lib64; do
    if [[ -e "$c/libcudart.so" ]]; then CUDA_LIB="$c"; break; fi
  done
  [[ -z "$CUDA_LIB" ]] && { echo "FAIL  libcudart.so not found (set CUDA_HOME)" >&2; exit 1; }
  step "link _C.so" "$CXX" -shared "$TMP"/*.o -L"$TL" -ltorch -ltorch_cpu -lc10 \
       -L"$CUDA_LIB" -lcudart -Wl,-rpath,"$TL" -Wl,-rpath,"$CUDA_LIB" \
       -o "$TMP/_C.so"  # unresolved symbols surface when Python loads it (RTLD_NOW)
  if [[ $FAIL == 0 ]]; then
    if [[ -n "$KEEP" ]]; then mkdir -p "$KEEP" && cp "$TMP/_C.so" "$KEEP/_C.so"; fi
    step "load _C.so and find every op schema" "$PY" - "$TMP/_C.so" <<'PY'
import sys
import torch
torch.ops.load_library(sys.argv[1])
for name in ("propagate", "propagate_backward", "topk", "fuse_forward", "fuse_backward"):
    op = getattr(torch.ops.slifmr_cuda, name)
    print(op.default._schema)
PY
  fi
fi

if [[ $FAIL != 0 ]]; then
  echo "check_csrc: FAIL" >&2
  exit 1
fi
echo "check_csrc: OK (${#CU[@]} .cu for sm_90+sm_80, ${#CPP[@]} .cpp)"
