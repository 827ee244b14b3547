#!/usr/bin/env bash
# Reproduce the tables of docs/RESULTS.md: SLIF-MR, its ablations and LightGCN, same protocol.
#
#   bench/run_results.sh                      # ml-1m-kg-mm, lastfm-kg, book-crossing-kg
#   bench/run_results.sh ml-1m-kg-mm          # one dataset
#   FORCE=1 bench/run_results.sh ...          # rerun variants that already have metrics.json
#   LOCK_MODE=-s bench/run_results.sh ...     # share the CPU lock (metrics are unchanged: the
#                                             # kernels are deterministic; s/epoch is then noisy,
#                                             # bench/time_epochs.sh measures it on its own)
#
# Datasets are looked up under $SLIFMR_DATA (default ../shared/data). Each variant is one
# training run (its own exclusive hold of the CPU lock, so timings are not disturbed by other
# jobs on the machine); finished variants are skipped, so an interrupted sweep resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/results}
LOCK=${SLIFMR_LOCK:-/tmp/slifmr-cpu.lock}
LOCK_MODE=${LOCK_MODE:--x}

run() {
  local data=$1 name=$2
  shift 2
  local dir="$OUT/$data/$name"
  if [[ -f "$dir/metrics.json" && -z "${FORCE:-}" ]]; then
    echo "== $data/$name: done already ($dir/metrics.json)"
    return
  fi
  echo "== $data/$name: slifmr train $*"
  rm -rf "$dir"
  flock "$LOCK_MODE" "$LOCK" python -m slifmr train --data "$data" --output "$dir" --quiet "$@" \
    > >(grep -v '^OpenBLAS' | tail -n 3) 2>&1
}

has_features() {
  python - "$1" <<'PY'
import glob, sys
from slifmr.data import resolve_data_path
sys.exit(0 if glob.glob(resolve_data_path(sys.argv[1]) + "/*_feat.npy") else 1)
PY
}

datasets=("$@")
[[ ${#datasets[@]} -eq 0 ]] && datasets=(ml-1m-kg-mm lastfm-kg book-crossing-kg)
for data in "${datasets[@]}"; do
  run "$data" lightgcn --config configs/lightgcn.yaml
  run "$data" slifmr --config configs/slifmr.yaml
  run "$data" slifmr-no-feedback --config configs/slifmr.yaml --no-feedback
  run "$data" slifmr-no-kg --config configs/slifmr.yaml --no-kg
  if has_features "$data"; then
    run "$data" slifmr-no-modalities --config configs/slifmr.yaml --no-modalities
    # text + KG only: bench/diagnose_views.py shows the image view lowering validation recall
    run "$data" slifmr-no-image --config configs/slifmr.yaml --modalities text
  fi
  run "$data" slifmr-no-consistency --config configs/slifmr.yaml --no-consistency
  # the other learning rate of each model (the configs hold the one chosen on validation)
  run "$data" lightgcn-lr0.001 --config configs/lightgcn.yaml --set lr=0.001
  run "$data" slifmr-lr0.005 --config configs/slifmr.yaml --set lr=0.005
done
python bench/results_table.py "$OUT" "${datasets[@]}"
