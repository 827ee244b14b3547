#!/usr/bin/env bash
# Seconds per epoch on one dataset (default ml-1m-kg-mm) with the CPU to ourselves: a short run
# of LightGCN and of SLIF-MR (full, feedback rebuilt every epoch by exact kNN, then by the
# incremental refresh) under the exclusive CPU lock.
# Prints, per model: steady seconds per epoch (epochs after the first, which may pay the kernels'
# JIT compilation), of which training steps, feedback rebuild (kNN over the item
# representations + insertion into A, A_m, KG) and its share of the epoch.
#
#   bench/time_epochs.sh [dataset] [epochs]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-ml-1m-kg-mm}
EPOCHS=${2:-4}
OUT=${OUT:-runs/timing}
LOCK=${SLIFMR_LOCK:-/tmp/slifmr-cpu.lock}
LOCK_MODE=${LOCK_MODE:--x}   # -s: share the lock (numbers then include other jobs' load)
for variant in lightgcn slifmr slifmr-refine; do
  dir="$OUT/$DATA/$variant"
  extra=()
  [[ $variant == slifmr-refine ]] && extra=(--set feedback_refine=true)
  rm -rf "$dir"
  flock "$LOCK_MODE" "$LOCK" python -m slifmr train --data "$DATA" --output "$dir" --quiet \
    --config "configs/${variant%-refine}.yaml" --epochs "$EPOCHS" --set patience=0 "${extra[@]}" \
    > /dev/null 2>&1
done
python - "$OUT/$DATA" <<'PY'
import json, os, sys
root = sys.argv[1]
print(f"| model | epochs timed | s/epoch | training steps s | feedback rebuild s | rebuild share | first epoch s |")
print("|---|---|---|---|---|---|---|")
names = {"lightgcn": "LightGCN", "slifmr": "SLIF-MR, exact kNN feedback",
         "slifmr-refine": "SLIF-MR, incremental kNN feedback (knn_refine)"}
for model in ("lightgcn", "slifmr", "slifmr-refine"):
    m = json.load(open(os.path.join(root, model, "metrics.json")))
    model = names[model]
    print(f"| {model} | {m['epochs_run'] - 1} | {m['seconds_per_epoch']:.2f} | {m['train_seconds_per_epoch']:.2f} "
          f"| {m['rebuild_seconds_per_epoch']:.3f} | {100 * m['rebuild_share']:.1f} % | {m['first_epoch_seconds']:.1f} |")
PY
